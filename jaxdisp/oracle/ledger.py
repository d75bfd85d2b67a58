"""The label ledger ``labels.jsonl``: every label the human oracle gave, append-only.

The ledger is the expensive asset: it is only ever appended to, never rewritten (on a ``gs://``
workdir, where objects cannot be appended to, an append is one object write of the old lines and
the new ones, under the ledger's lock). One JSON object per line: ``id``, ``label``, ``class``,
``round``, ``file``, ``source`` and ``imported_at``.
"""

from __future__ import annotations

import io
import json
import os

import numpy as np

from jaxdisp import files
from jaxdisp.errors import JaxdispError

LEDGER = 'labels.jsonl'


def ledger_path(workdir: str) -> str:
  return os.path.join(workdir, LEDGER)


def read_ledger(workdir: str) -> dict:
  """``{id: entry}`` of every label in the ledger (later lines never contradict earlier ones)."""
  path = ledger_path(workdir)
  out = {}
  if not files.exists(path):
    return out
  for n, line in enumerate(io.StringIO(files.read_text(path)), 1):
    if not line.endswith('\n'):
      break  # a torn last line from a crash mid-append carries no acknowledged label
    try:
      entry = json.loads(line)
    except json.JSONDecodeError as e:
      raise JaxdispError(f'{path} line {n} is not JSON ({e.msg}); the ledger was edited '
                         'by hand: restore it from a backup') from None
    out[int(entry['id'])] = entry
  return out


def append_ledger(workdir: str, entries: list[dict]) -> None:
  """Appends ``entries`` in one write, durable (fsynced) before it returns."""
  if entries:
    files.append_lines(ledger_path(workdir),
                       ''.join(json.dumps(e, sort_keys=True) + '\n' for e in entries))


def missing_labels(workdir: str, labeled_round: np.ndarray) -> np.ndarray:
  """Queried ids (``labeled_round >= 1``) that the ledger has no label for."""
  ledger = read_ledger(workdir)
  queried = np.flatnonzero(labeled_round >= 1)
  return np.array([i for i in queried if int(i) not in ledger], np.int64)


def training_labels(workdir: str, dataset_labels: np.ndarray) -> np.ndarray:
  """The dataset's labels with every ledger label written over them."""
  labels = np.asarray(dataset_labels, np.int32).copy()
  for i, entry in read_ledger(workdir).items():
    labels[i] = int(entry['label'])
  return labels
