"""Graceful stops (SIGTERM/SIGINT) and the fault-injection points of the crash tests.

On SIGTERM (a preemption notice, ``kill``, a scheduler) or SIGINT (Ctrl-C) the run finishes the
epoch in progress -- on TPU/GPU an epoch is one compiled call, which cannot be cut short anyway
-- writes a training checkpoint, and exits with status ``128 + signal`` so schedulers retry;
rerunning the same command resumes. A second Ctrl-C stops at once (the last checkpoint stays).

``JAXDISP_FAULT_KILL_AT=<point>@<round>[:<epoch>]`` makes the process SIGKILL itself at a named
point (see :func:`fault_point`); the tests use it to crash a run at exact places.
"""

from __future__ import annotations

import os
import signal

from absl import logging

from jaxdisp.errors import Preempted


class StopSignal:
  """Records SIGTERM/SIGINT instead of dying; the training loop polls :attr:`signum`."""

  def __init__(self):
    self.signum = None
    self._previous = {}

  def __enter__(self) -> 'StopSignal':
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread: leave signals alone
        pass
    return self

  def __exit__(self, *exc) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)

  def _handle(self, signum, frame) -> None:
    del frame
    if self.signum is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt  # second Ctrl-C: stop now
    self.signum = signum
    logging.warning('received %s: finishing the current epoch, then checkpointing and exiting',
                    signal.Signals(signum).name)

  def check(self, where: str) -> None:
    if self.signum is not None:
      raise Preempted(self.signum, where)


def fault_armed(name: str) -> bool:
  """Whether ``JAXDISP_FAULT_KILL_AT`` targets point ``name`` (callers may settle state first)."""
  return os.environ.get('JAXDISP_FAULT_KILL_AT', '').partition('@')[0] == name


def fault_point(name: str, *where: int) -> None:
  """SIGKILLs this process if ``JAXDISP_FAULT_KILL_AT`` names this point (tests only).

  Points: ``epoch@r:e`` after epoch ``e`` (1-based count) of round ``r``, once every checkpoint
  write has finished;
  ``train_save@r:e`` while the epoch-``e`` checkpoint is being written; ``scored@r`` once round
  ``r``'s pool is scored (any auxiliary model of the strategy trained), before the selection;
  ``round@r`` after round ``r``'s checkpoint, before its outputs; ``results_write`` inside the
  atomic write of an output.
  """
  spec = os.environ.get('JAXDISP_FAULT_KILL_AT', '')
  if not spec:
    return
  point, _, at = spec.partition('@')
  if point == name and (not at or tuple(int(v) for v in at.split(':')) == tuple(where)):
    os.kill(os.getpid(), signal.SIGKILL)
