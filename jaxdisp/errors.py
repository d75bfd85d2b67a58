"""User-facing errors.

Anything the user can fix (a bad config value, a missing folder, a corrupt image) raises a
:class:`JaxdispError` with a one-line message. ``jaxdisp.main`` prints it as ``error: <message>``
and exits with status 2; library callers can catch it.
"""


class JaxdispError(Exception):
  """Base class: a problem with the user's input, reported as one line."""


class ConfigError(JaxdispError):
  """An invalid configuration value or combination."""


class DataError(JaxdispError):
  """A dataset that cannot be found, read or decoded."""
