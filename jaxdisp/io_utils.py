"""Small file utilities shared by the run, the report, the oracle and the data.

:func:`atomic_write` is the one way jaxdisp writes a file that someone may read while it is
being written or after a crash: a temporary file in the same folder, ``fsync``, then a rename,
so a reader sees the previous version or the new one, never a torn file.
"""

from __future__ import annotations

import io
import os
import tempfile
from typing import Callable

import numpy as np

TMP_SUFFIX = '.jaxdisp-tmp'


def atomic_write(path: str, data: str | bytes, before_replace: Callable[[], None] | None = None
                 ) -> None:
  """Writes ``data`` to ``path`` via a temporary file in the same folder, ``fsync`` and rename.

  ``before_replace`` runs after the temporary file is complete and before the rename (the
  crash tests kill the process there).
  """
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix='.' + os.path.basename(path) + '.',
                             suffix=TMP_SUFFIX)
  try:
    with os.fdopen(fd, 'wb') as f:
      f.write(data.encode() if isinstance(data, str) else data)
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give a normal file's mode
    if before_replace is not None:
      before_replace()
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def save_npz_atomic(path: str, **arrays) -> None:
  """``np.savez`` through :func:`atomic_write`."""
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  atomic_write(path, buf.getvalue())


def remove_stale_temporaries(directory: str) -> None:
  """Deletes temporaries of writes that a killed process never renamed into place."""
  if os.path.isdir(directory):
    for name in os.listdir(directory):
      if name.startswith('.') and name.endswith(TMP_SUFFIX):
        os.unlink(os.path.join(directory, name))


def _umask() -> int:
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


def csv_cell(text: str) -> str:
  """One CSV cell, quoted when it holds a comma, a quote or a newline. A file name that is not
  valid UTF-8 (kept by os.listdir as surrogates) is written with U+FFFD in its place: the id
  identifies the sample, the name is for people."""
  text = text.encode('utf-8', 'surrogateescape').decode('utf-8', 'replace')
  return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text
