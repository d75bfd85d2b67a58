"""The label ledger ``labels.jsonl``: every label the human oracle gave, append-only.

The ledger is the expensive asset: it is only ever appended to (on a ``gs://`` workdir, where
objects cannot be appended to, an append is one object write of the old lines and the new ones,
under the ledger's lock). The one exception is a crash mid-append: the next import, export or
run mends the torn last line under the lock (:func:`repair_tail`), keeping every complete label.
One JSON object per line: ``id``, ``label``, ``class``, ``round``, ``file``, ``source`` and
``imported_at``.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

from jaxdisp import files, locking
from jaxdisp.errors import JaxdispError, LockHeld

LEDGER = 'labels.jsonl'


def ledger_path(workdir: str) -> str:
  return os.path.join(workdir, LEDGER)


def _entry(line: bytes):
  """The ledger entry of one line, or None when it is not one (not JSON, no id or label)."""
  try:
    entry = json.loads(line.decode('utf-8'))
    int(entry['id']), int(entry['label'])
  except (ValueError, KeyError, TypeError, OverflowError):  # JSON- and UnicodeDecodeError too
    return None
  return entry


def _parse(path: str, raw: bytes) -> tuple[dict, bytes | None]:
  """(``{id: entry}``, the torn last line or None) of the ledger's bytes ``raw``.

  A last line without its newline is what a crash mid-append leaves: when it is a whole entry
  it counts (only its newline was lost), else it is torn and carries no label. Any other line
  that is not an entry is a ledger edited by hand: a one-line error.
  """
  out, lines = {}, raw.split(b'\n')
  tail = lines.pop()  # b'' when the file ends with a newline
  for n, line in enumerate(lines, 1):
    entry = _entry(line)
    if entry is None:
      raise JaxdispError(f'{path} line {n} is not a label entry (not JSON, or no id/label); '
                         'the ledger was edited by hand: restore it from a backup')
    out[int(entry['id'])] = entry
  if tail:
    entry = _entry(tail)
    if entry is None:
      return out, tail
    out[int(entry['id'])] = entry
  return out, None


def _read_bytes(path: str) -> bytes:
  try:
    return files.read_bytes(path)
  except OSError as e:
    raise JaxdispError(f'cannot read the label ledger {path}: {e.strerror or e}') from None


def read_ledger(workdir: str) -> dict:
  """``{id: entry}`` of every label in the ledger (later lines never contradict earlier ones).
  A last line without its newline counts when it is a whole entry and is left out when it is
  torn (see :func:`repair_tail`, which mends it), so every reader agrees, mended or not."""
  path = ledger_path(workdir)
  if not files.exists(path):
    return {}
  return _parse(path, _read_bytes(path))[0]


def repair_tail(workdir: str, locked: bool = False) -> str:
  """Mends the last line of a ledger that a crash mid-append left without its newline.

  A whole entry gets its newline; a torn line is copied to ``labels.jsonl.torn-<time>`` beside
  the ledger, and the ledger rewritten (atomically) without it, so that the next append can never
  make it a middle line. Every complete line is kept. Needs the ledger's lock: ``locked`` says the
  caller holds it; otherwise it is taken here, and when another process holds it (an import,
  which repairs the tail itself) nothing is done. Returns the warning to print, or ''.
  """
  path = ledger_path(workdir)
  if not files.exists(path):
    return ''
  raw = _read_bytes(path)
  if not raw or raw.endswith(b'\n'):
    return ''
  if not locked:
    try:
      with locking.ledger_lock(path):
        return repair_tail(workdir, locked=True)
    except LockHeld:
      return ''
  _, torn = _parse(path, raw)
  try:
    if torn is None:
      files.atomic_write(path, raw + b'\n')
      return f'warning: {path}: its last label had lost its newline (a crash mid-import); mended'
    aside = f'{path}.torn-{time.strftime("%Y%m%dT%H%M%S")}-{os.getpid()}'
    files.atomic_write(aside, torn)
    files.atomic_write(path, raw[:len(raw) - len(torn)])
  except OSError as e:
    raise JaxdispError(f'cannot mend the torn last line of {path}: {e.strerror or e}') from None
  return (f'warning: {path}: its last line was torn by a crash mid-import ({len(torn)} bytes, no '
          f'complete label); set aside in {aside}, every complete label kept')


def repair_tail_and_warn(workdir: str) -> None:
  """:func:`repair_tail`, printing its warning (to stderr) if there is one."""
  warning = repair_tail(workdir)
  if warning:
    print(warning, file=sys.stderr, flush=True)


def append_ledger(workdir: str, entries: list[dict]) -> None:
  """Appends ``entries`` in one write, durable (fsynced) before it returns."""
  if entries:
    files.append_lines(ledger_path(workdir),
                       ''.join(json.dumps(e, sort_keys=True) + '\n' for e in entries))


def missing_labels(workdir: str, labeled_round: np.ndarray) -> np.ndarray:
  """Queried ids (``labeled_round >= 1``) that the ledger has no label for (a torn last line of
  the ledger is mended first, see :func:`repair_tail`)."""
  repair_tail_and_warn(workdir)
  ledger = read_ledger(workdir)
  queried = np.flatnonzero(labeled_round >= 1)
  return np.array([i for i in queried if int(i) not in ledger], np.int64)


def training_labels(workdir: str, dataset_labels: np.ndarray) -> np.ndarray:
  """The dataset's labels with every ledger label written over them."""
  labels = np.asarray(dataset_labels, np.int32).copy()
  for i, entry in read_ledger(workdir).items():
    labels[i] = int(entry['label'])
  return labels
