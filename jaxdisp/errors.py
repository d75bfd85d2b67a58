"""Every exception jaxdisp raises on purpose.

Anything the user can fix (a bad config value, a missing folder, a corrupt image, a rejected
answers file) is a :class:`JaxdispError` with a one-line message; the command-line tools print
it as ``error: <message>`` and exit with status 2. :class:`Preempted` is a stop on request
(SIGTERM/SIGINT), not an error: the tools exit with ``128 + signal``.
"""

import signal


class JaxdispError(Exception):
  """Base class: a problem with the user's input, reported as one line."""


class ConfigError(JaxdispError):
  """An invalid configuration value or combination."""


class DataError(JaxdispError):
  """A dataset that cannot be found, read or decoded."""


class NumericalError(JaxdispError):
  """Scores or losses that are NaN or infinite."""


class ReportError(JaxdispError):
  """A sweep folder that cannot be reported on."""


class LabelError(JaxdispError):
  """A rejected answers file; ``problems`` holds one line per bad row."""

  def __init__(self, path: str, problems: list[str]):
    self.problems = problems
    super().__init__(f'{path}: {len(problems)} problem(s), nothing imported: ' + problems[0])


class LockHeld(JaxdispError):
  """The workdir or ledger is locked by another live process."""


class StrategyError(JaxdispError):
  """A strategy (a user's, typically) that breaks the contract of ``score`` or ``select``."""


class StorageError(JaxdispError):
  """A write the disk refused (full, a file-size limit, read-only, a path it cannot encode)."""


class Preempted(Exception):
  """Raised at a safe point after a stop signal; carries the exit status. ``saved``: whether
  the work so far is in a checkpoint (else the rerun recomputes it from the last one)."""

  def __init__(self, signum: int, where: str, saved: bool = True):
    self.exit_code = 128 + signum
    what = ('checkpoint saved' if saved else
            'nothing of it is checkpointed: the rerun computes it again from the last checkpoint')
    super().__init__(f'stopped by {signal.Signals(signum).name} {where}; {what}; '
                     'rerun the same command to resume')
