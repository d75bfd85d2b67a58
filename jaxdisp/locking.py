"""Exclusive locks: one run per workdir, one label import per ledger, at a time.

A lock is ``fcntl.flock`` on a small lock file. The kernel drops it when the holder's process
ends, however it ends (SIGKILL, OOM, a crash), so a dead holder never leaves a stale lock; the
file itself stays, holding the last holder's pid, host and start time, which is only ever read
to say who holds a lock that is taken. A second run or import does not wait: it stops at once
with one line (:class:`LockHeld`, exit status 2 from the command line).

The lock is on the local filesystem of the ``--workdir``. It protects a checkpoint folder
elsewhere (``checkpoint.dir``, e.g. ``gs://...``) only as far as every run that writes there
uses the same workdir on the same machine: two machines with their own workdirs and one shared
``gs://`` checkpoint folder are not stopped from writing it at the same time. On NFS, Linux
emulates ``flock`` with NFS byte-range locks; where a filesystem supports no locks at all, or the
lock file cannot be created (a read-only workdir), the run goes on unlocked with a warning.

A ``gs://`` workdir (or ledger) has no local filesystem, and an object store has no ``flock``:
its lock is a local lock file named by a hash of the path, in :func:`remote_lock_folder`
(``$TMPDIR/jaxdisp-locks``). It stops a second run or import on the same machine, exactly as a
local lock does; it does not stop one on another machine (or in another container with its own
``/tmp``) from using the same ``gs://`` workdir. Run one job per ``gs://`` workdir.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import socket
import sys
import tempfile
import time

from absl import logging
from etils import epath

from jaxdisp import files
from jaxdisp.errors import JaxdispError, LockHeld

WORKDIR_LOCK = '.jaxdisp.lock'
_UNSUPPORTED = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)
_CANNOT_CREATE = (errno.EROFS, errno.EACCES, errno.EPERM)


def holder(lock_path: str) -> dict:
  """What the last holder of ``lock_path`` wrote into it (``{}`` if nothing readable)."""
  try:
    with open(lock_path, encoding='utf-8') as f:
      info = json.loads(f.read() or '{}')
    return info if isinstance(info, dict) else {}
  except (OSError, ValueError):
    return {}


def describe(info: dict) -> str:
  if not info.get('pid'):
    return 'another process (it has not written its pid yet)'
  return f'pid {info["pid"]} on {info.get("host", "?")} since {info.get("since", "?")}'


@contextlib.contextmanager
def exclusive(lock_path: str, what: str, hint: str = 'wait for it to finish, or stop it'):
  """Holds an exclusive lock on ``lock_path`` for the ``with`` block; raises :class:`LockHeld`
  at once when another process holds it. ``what`` names the locked thing in messages."""
  try:
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
  except OSError as e:
    if e.errno not in _CANNOT_CREATE:
      raise JaxdispError(f'cannot create the lock file {lock_path}: {e.strerror or e}') from None
    logging.warning('cannot create the lock file %s (%s): going on without a lock on %s',
                    lock_path, e.strerror, what)
    yield {}
    return
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise LockHeld(f'{what} is in use by {describe(holder(lock_path))}; {hint}') from None
    except OSError as e:
      if e.errno not in _UNSUPPORTED:
        raise
      logging.warning('the filesystem of %s supports no locks (%s): going on without a lock on '
                      '%s', lock_path, e.strerror, what)
      yield {}
      return
    info = {'pid': os.getpid(), 'host': socket.gethostname(),
            'since': time.strftime('%Y-%m-%d %H:%M:%S %z'), 'command': ' '.join(sys.argv)}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info) + '\n').encode(), 0)
    try:
      yield info
    finally:
      os.ftruncate(fd, 0)  # still held: nobody reads a finished holder's details
  finally:
    os.close(fd)  # releases the lock


def remote_lock_folder() -> str:
  """Where the local lock files of ``gs://`` workdirs and ledgers are (made on first use)."""
  return os.path.join(tempfile.gettempdir(), 'jaxdisp-locks')


def lock_file(path: str) -> str:
  """Where the lock file ``path`` is kept: at ``path`` on a local filesystem; for a ``gs://``
  path, a local file named by a hash of it (see the module docstring)."""
  if not files.is_remote(path):
    return path
  folder = remote_lock_folder()
  with contextlib.suppress(OSError):  # if it cannot be made, opening the lock file says so
    os.makedirs(folder, exist_ok=True)
  digest = hashlib.sha256(str(epath.Path(path)).encode()).hexdigest()[:24]  # gs://b//x = gs://b/x
  return os.path.join(folder, f'{digest}-{os.path.basename(path).lstrip(".")}')


def workdir_lock(workdir: str, process_index: int = 0):
  """One run at a time on ``workdir``. Each process of a multi-process run takes its own lock
  file (processes on one machine may share a workdir), so a second run's processes all stop."""
  name = WORKDIR_LOCK if process_index == 0 else f'.jaxdisp.process{process_index}.lock'
  return exclusive(lock_file(os.path.join(workdir, name)), f'workdir {workdir}',
                   'wait for that run to finish or stop it, or use another --workdir')


def ledger_lock(ledger_path: str):
  """One label import at a time into the ledger ``ledger_path``."""
  return exclusive(lock_file(ledger_path + '.lock'), f'the label ledger {ledger_path}',
                   'wait for that import to finish, then import again')
