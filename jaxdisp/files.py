"""Every file of a workdir, on the local disk or at a ``gs://`` path, through ``etils.epath``.

:func:`atomic_write` is the one way jaxdisp writes a file that someone may read while it is
being written or after a crash: locally a temporary file in the same folder (named
``.<name>.<random>`` + :data:`TMP_SUFFIX`), ``fsync``, then a rename; on ``gs://`` (any URI path
epath knows) a single object write, which is atomic there. Either way a reader sees the previous
version or the new one, never a torn file. :func:`remove_stale_temporaries` is the one cleaner of
temporaries that a killed process never renamed into place.

A write the storage refuses (a full disk, a file-size limit, a quota, a read-only or
unwritable folder: :data:`jaxdisp.storage.REFUSED_ERRNOS`) raises one
:class:`~jaxdisp.errors.StorageError` line naming the file, and leaves no temporary and no
partial append behind: the rerun of the same command, after making room, writes it whole.

A ``gs://`` path needs a backend for epath: ``tf.io.gfile`` where TensorFlow is installed,
otherwise ``gcsfs`` (``pip install gcsfs``).
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from typing import Callable

import numpy as np
from etils import epath

from jaxdisp import storage

TMP_SUFFIX = '.jaxdisp-tmp'
# The folders of a workdir (besides the workdir itself) that atomic writes go to.
ATOMIC_SUBFOLDERS = ('queries', 'diagnostics')


def is_remote(path) -> bool:
  """Whether ``path`` is a URI (``gs://...``) rather than a path on the local filesystem."""
  return '://' in os.fspath(path)


def exists(path) -> bool:
  return epath.Path(path).exists()


def is_dir(path) -> bool:
  return epath.Path(path).is_dir()


@contextlib.contextmanager
def refused_as_one_line(path):
  """Turns a write the storage refuses inside the block into one StorageError naming ``path``."""
  try:
    yield
  except OSError as e:
    error = storage.refused_output(path, e)
    if error is None:
      raise
    raise error from None


def makedirs(path) -> None:
  """Creates the folder ``path`` and its parents (nothing to do if it exists)."""
  if epath.Path(path).is_dir():
    return  # nothing to write (a read-only workdir that has it is fine)
  with refused_as_one_line(path):
    epath.Path(path).mkdir(parents=True, exist_ok=True)


def read_text(path) -> str:
  return epath.Path(path).read_text()


def read_bytes(path) -> bytes:
  return epath.Path(path).read_bytes()


def atomic_write(path, data: str | bytes, before_replace: Callable[[], None] | None = None
                 ) -> None:
  """Writes ``data`` to ``path`` so that readers see the old file or the new one.

  Locally: a temporary file in the same folder, ``fsync``, rename (the folder is created if
  needed). Remote: one object write. ``before_replace`` runs when the new contents are complete
  and not yet visible (the crash tests kill the process there).
  """
  data = data.encode() if isinstance(data, str) else data
  with refused_as_one_line(path):
    _atomic_write(path, data, before_replace)


def _atomic_write(path, data: bytes, before_replace) -> None:
  if is_remote(path):
    target = epath.Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if before_replace is not None:
      before_replace()
    target.write_bytes(data)
    return
  directory = os.path.dirname(os.path.abspath(path))
  makedirs(directory)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix='.' + os.path.basename(path) + '.',
                             suffix=TMP_SUFFIX)
  try:
    with os.fdopen(fd, 'wb') as f:
      f.write(data)
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


def save_npz(path, **arrays) -> None:
  """``np.savez`` through :func:`atomic_write`."""
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  atomic_write(path, buf.getvalue())


def append_lines(path, text: str) -> None:
  """Appends the whole lines ``text`` to ``path`` and makes them durable before returning.

  A torn last line (a crash mid-append left no newline) gets a newline first, so ``text`` never
  glues onto it. Locally: one ``write`` in append mode, ``fsync`` of the file, and of its folder
  when the file is new. Remote (objects cannot be appended to): the old contents and ``text``
  in one object write, so the caller must keep other writers off ``path`` (a lock). A refused
  write (a full disk) cuts the file back to its old size before the StorageError.
  """
  if is_remote(path):
    target = epath.Path(path)
    old = target.read_bytes() if target.exists() else b''
    if old and not old.endswith(b'\n'):
      text = '\n' + text
    atomic_write(path, old + text.encode())
    return
  existed = os.path.exists(path)
  size = os.path.getsize(path) if existed else 0
  with refused_as_one_line(path):
    try:
      _append_local(path, text, size)
    except OSError:
      with contextlib.suppress(OSError):  # no partial lines (a new file: no empty one) stay
        if existed:
          os.truncate(path, size)
        else:
          os.unlink(path)
      raise
  if not existed:
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
      os.fsync(fd)
    finally:
      os.close(fd)


def _append_local(path, text: str, size: int) -> None:
  with open(path, 'a') as f:
    if size:
      with open(path, 'rb') as r:
        r.seek(-1, os.SEEK_END)
        if r.read(1) != b'\n':
          text = '\n' + text
    f.write(text)
    f.flush()
    os.fsync(f.fileno())


def remove_stale_temporaries(folder) -> None:
  """Deletes the temporaries of writes that a killed process never renamed into place, in
  ``folder`` and its :data:`ATOMIC_SUBFOLDERS` (a run's workdir, a report's folder)."""
  for sub in ('',) + ATOMIC_SUBFOLDERS:
    directory = epath.Path(folder) / sub if sub else epath.Path(folder)
    if not directory.is_dir():
      continue
    for child in directory.iterdir():
      if child.name.startswith('.') and child.name.endswith(TMP_SUFFIX):
        with refused_as_one_line(child):
          child.unlink(missing_ok=True)


def _umask() -> int:
  mask = os.umask(0o022)
  os.umask(mask)
  return mask
