"""Graceful stops (SIGTERM/SIGINT) and the fault-injection points of the crash tests.

On SIGTERM (a preemption notice, ``kill``, a scheduler) or SIGINT (Ctrl-C) the run finishes the
epoch in progress -- on TPU/GPU an epoch is one compiled call, which cannot be cut short anyway
-- writes a training checkpoint, and exits with status ``128 + signal`` so schedulers retry;
rerunning the same command resumes. Work that is not checkpointed (a strategy's auxiliary
training at scoring time, e.g. VAAL's) polls :func:`check` between its compiled chunks and stops
there; the rerun computes it again. A stop is answered within :data:`GRACE_SECONDS` anywhere: if
no safe point is reached by then (one long compiled call, a hung write), a watchdog exits the
process with the same status and one line, leaving the last complete checkpoint (orbax and
:mod:`jaxdisp.files` never leave a torn one). A second Ctrl-C exits at once, with one line.

``JAXDISP_FAULT_KILL_AT=<point>@<round>[:<epoch>]`` makes the process SIGKILL itself at a named
point (see :func:`fault_point`); the tests use it to crash a run at exact places.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from absl import logging

from jaxdisp.errors import Preempted

# From the signal to the exit, at most (a preempted Cloud TPU VM gives about 30 s);
# ``JAXDISP_STOP_GRACE_SECONDS`` overrides it.
GRACE_SECONDS = 20.0

_ACTIVE: list['StopSignal'] = []  # the StopSignal of the running experiment, if any


class StopSignal:
  """Records SIGTERM/SIGINT instead of dying; the training loop polls :attr:`signum`."""

  def __init__(self, grace_seconds: float | None = None):
    self.signum = None
    self.grace = (float(os.environ.get('JAXDISP_STOP_GRACE_SECONDS', GRACE_SECONDS))
                  if grace_seconds is None else grace_seconds)
    self._previous = {}
    self._done = threading.Event()

  def __enter__(self) -> 'StopSignal':
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread: leave signals alone
        pass
    _ACTIVE.append(self)
    return self

  def __exit__(self, *exc) -> None:
    self._done.set()
    if self in _ACTIVE:
      _ACTIVE.remove(self)
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)

  def _handle(self, signum, frame) -> None:
    del frame
    if self.signum is not None:
      if signum == signal.SIGINT:  # second Ctrl-C: stop now, without a traceback
        _exit_now(130, 'stopped: second Ctrl-C: exiting at once; the last complete checkpoint '
                  'stays, rerun the same command to resume')
      return  # a repeated SIGTERM: the first one is being honoured
    self.signum = signum
    logging.warning('received %s: finishing the current epoch (or compiled chunk), then '
                    'checkpointing and exiting (at most %.0f s)',
                    signal.Signals(signum).name, self.grace)
    threading.Thread(target=self._watchdog, name='jaxdisp-stop-watchdog', daemon=True).start()

  def _watchdog(self) -> None:
    if not self._done.wait(self.grace):
      name = signal.Signals(self.signum).name
      _exit_now(128 + self.signum,
                f'stopped by {name}: no safe point within {self.grace:.0f} s, exiting now; the '
                'last complete checkpoint stays, rerun the same command to resume')

  def check(self, where: str, saved: bool = True) -> None:
    if self.signum is not None:
      self._done.set()  # a safe point: the watchdog stands down
      raise Preempted(self.signum, where, saved)


def check(where: str) -> None:
  """Raises :class:`Preempted` if a stop was requested, for work that keeps no checkpoint of
  its own (the rerun recomputes it). A no-op outside a running experiment."""
  if _ACTIVE:
    _ACTIVE[-1].check(where, saved=False)


def _exit_now(status: int, line: str) -> None:
  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except (OSError, ValueError):
      pass
  try:
    os.write(2, (line + '\n').encode('utf-8', 'replace'))
  finally:
    os._exit(status)  # pylint: disable=protected-access


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
