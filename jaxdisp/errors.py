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


class Preempted(Exception):
  """Raised at a safe point after a stop signal; carries the exit status."""

  def __init__(self, signum: int, where: str):
    self.exit_code = 128 + signum
    super().__init__(f'stopped by {signal.Signals(signum).name} {where}; checkpoint saved, '
                     'rerun the same command to resume')
