"""Command-line utilities shared by the run, the sweep, the report and the oracle's command line.

Files are written by :mod:`jaxdisp.files`.
"""

from __future__ import annotations

import argparse
import os
import sys

# Logging of these libraries is reduced to warnings (orbax, clu and tensorstore log every write).
_NOISY = tuple(f'{os.sep}{name}{os.sep}' for name in ('orbax', 'clu', 'tensorstore'))


def quiet_libraries(record) -> bool:
  """absl log filter: drops INFO chatter of orbax/clu/tensorstore (warnings still show)."""
  return record.levelno >= 30 or not any(n in record.pathname for n in _NOISY)


class ArgumentParser(argparse.ArgumentParser):
  """argparse with one-line errors (``error: ...``, exit 2), like every jaxdisp tool."""

  def error(self, message):
    print(f'error: {message}', file=sys.stderr)
    sys.exit(2)
