"""Writes the storage refuses (a full disk, a file-size limit, a quota, a read-only file system),
recognised wherever they surface -- an ``OSError``, or the status text tensorstore gives orbax --
and reported as one :class:`~jaxdisp.errors.StorageError` line naming the path; orbax's own
error records about them (tracebacks from its writer threads) are dropped.
"""

from __future__ import annotations

import errno
import functools
import logging as logging_std
import os
import re

from absl import logging

from jaxdisp.errors import StorageError

# Writes the storage refuses, by errno: what to tell the user.
REFUSED_ERRNOS = {errno.ENOSPC: 'no space left on the device', errno.EDQUOT: 'disk quota exceeded',
                  errno.EFBIG: 'file too large (a file-size limit)',
                  errno.EROFS: 'read-only file system', errno.EACCES: 'permission denied',
                  errno.EPERM: 'operation not permitted'}
# Of those, the ones that more room (or a higher limit) cures; the others need write permission.
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def remedy(why: str) -> str:
  """What to do about the refusal ``why`` (a value of :data:`REFUSED_ERRNOS`)."""
  if why in (REFUSED_ERRNOS[n] for n in _FULL):
    return 'make room (or lift the limit)'
  return 'make it writable (or use another folder)'


def refused_output(path, exc: BaseException) -> StorageError | None:
  """The one-line :class:`StorageError` for an output file ``path`` whose write raised ``exc``,
  if the storage refused it (:func:`refused_write`), else None."""
  problem = refused_write(exc)
  if problem is None:
    return None
  return StorageError(f'cannot write {os.fspath(path)}: {problem[1]}; {remedy(problem[1])}, '
                      'then rerun the same command')


def refused_write(exc: BaseException | None) -> tuple[str, str] | None:
  """``(path, why)`` if ``exc`` or an exception it was raised from is a write the storage
  refused (:data:`REFUSED_ERRNOS`: an ``OSError``, or tensorstore's status text with its
  ``os_error_code``), else None. ``path`` is '' where the error names none."""
  seen = set()
  while exc is not None and id(exc) not in seen:
    seen.add(id(exc))
    if isinstance(exc, OSError) and exc.errno in REFUSED_ERRNOS:
      return str(exc.filename or ''), REFUSED_ERRNOS[exc.errno]
    code = re.search(r"os_error_code='?(\d+)", str(exc))
    if code and int(code[1]) in REFUSED_ERRNOS:
      path = re.search(r'local file "([^"]+)"', str(exc))
      return (path[1] if path else ''), REFUSED_ERRNOS[int(code[1])]
    exc = exc.__cause__ or exc.__context__
  return None


def refused_writes_as_one_line(method):
  """For :class:`jaxdisp.checkpointing.Checkpointer`'s methods: a refused write inside
  ``method`` becomes one :class:`StorageError` line that names the checkpoint folder (the
  temporary step folder orbax was writing is ignored by a rerun)."""
  @functools.wraps(method)
  def wrapped(self, *args, **kwargs):
    try:
      return method(self, *args, **kwargs)
    except StorageError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      problem = refused_write(e)
      if problem is None:
        raise
      path = re.sub(r'\.orbax-checkpoint-tmp.*', '', problem[0]) or str(getattr(self, 'root', ''))
      raise StorageError(f'cannot write the checkpoint {path}: {problem[1]}; '
                         f'{remedy(problem[1])}, then rerun the same command: it resumes from '
                         'the last complete checkpoint') from None
  return wrapped


class _QuietStorageErrors(logging_std.Filter):
  """Drops orbax's own ERROR records (with tracebacks, from its writer threads) about a write
  the storage refused: :class:`jaxdisp.checkpointing.Checkpointer` reports it once, as one line."""

  def filter(self, record) -> bool:
    if record.levelno < logging_std.ERROR or '/orbax/' not in record.pathname:
      return True
    if record.exc_info and refused_write(record.exc_info[1]):
      return False
    text = record.getMessage()
    return not (re.search(r"os_error_code='?(%s)\b" % '|'.join(map(str, REFUSED_ERRNOS)), text)
                or any(os.strerror(n) in text for n in REFUSED_ERRNOS))


logging.get_absl_handler().addFilter(_QuietStorageErrors())
