"""The human oracle: query files out, an append-only label ledger in.

With ``config.oracle = 'files'`` a round that selects samples writes ``queries/round_<r>.csv``
(dataset id, file, score, the model's modal prediction as a hint, an empty ``label`` column) and
the run stops. Answers are imported with ``python -m jaxdisp.label import --workdir W --file F``,
which validates the whole file first and then appends the new labels to ``labels.jsonl`` in one
write followed by ``fsync`` -- a file is applied completely or not at all, and a re-import of the
same answers is a no-op. The next run trains on the ledger's labels for every queried sample.

The ledger is the expensive asset: it is only ever appended to, never rewritten.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import time

import numpy as np

from jaxdisp.errors import JaxdispError, LabelError
from jaxdisp.io_utils import atomic_write, csv_cell

LEDGER = 'labels.jsonl'
QUERY_COLUMNS = ('id', 'file', 'score', 'hint_label', 'hint_class', 'label')


@dataclasses.dataclass(frozen=True)
class Context:
  """What validation needs to know about the experiment (read from results.json)."""
  num_train: int
  class_names: tuple
  queried: dict  # dataset id -> round it was queried in
  files: dict  # dataset id -> file name / id string


def ledger_path(workdir: str) -> str:
  return os.path.join(workdir, LEDGER)


def read_ledger(workdir: str) -> dict:
  """``{id: entry}`` of every label in the ledger (later lines never contradict earlier ones)."""
  path = ledger_path(workdir)
  out = {}
  if not os.path.exists(path):
    return out
  with open(path) as f:
    for n, line in enumerate(f, 1):
      if not line.endswith('\n'):
        break  # a torn last line from a crash mid-append carries no acknowledged label
      try:
        entry = json.loads(line)
      except json.JSONDecodeError as e:
        raise JaxdispError(f'{path} line {n} is not JSON ({e.msg}); the ledger was edited '
                           'by hand: restore it from a backup') from None
      out[int(entry['id'])] = entry
  return out


def _fsync_dir(directory: str) -> None:
  fd = os.open(directory, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def append_ledger(workdir: str, entries: list[dict]) -> None:
  """Appends ``entries`` in one write, then fsyncs the file and its directory."""
  if not entries:
    return
  path = ledger_path(workdir)
  existed = os.path.exists(path)
  payload = ''.join(json.dumps(e, sort_keys=True) + '\n' for e in entries)
  with open(path, 'a') as f:
    if existed and os.path.getsize(path):
      with open(path, 'rb') as r:  # a torn tail (crash mid-append) must not glue onto our line
        r.seek(-1, os.SEEK_END)
        if r.read(1) != b'\n':
          payload = '\n' + payload
    f.write(payload)
    f.flush()
    os.fsync(f.fileno())
  if not existed:
    _fsync_dir(os.path.dirname(os.path.abspath(path)))


def context_from_workdir(workdir: str) -> Context:
  path = os.path.join(workdir, 'results.json')
  if not os.path.exists(path):
    raise JaxdispError(f'{workdir} has no results.json: run the experiment first')
  with open(path) as f:
    res = json.load(f)
  queried = {int(i): r['round'] for r in res['rounds'] for i in r['selected']}
  files = {}
  sel_path = os.path.join(workdir, 'selections.jsonl')
  if os.path.exists(sel_path):
    with open(sel_path) as f:
      for line in f:
        s = json.loads(line)
        files[int(s['id'])] = s.get('file', str(s['id']))
  ds = res['dataset']
  return Context(ds['num_train'], tuple(ds['class_names']), queried, files)


def _parse_label(text: str, class_names: tuple):
  text = text.strip()
  if text in class_names:
    return class_names.index(text)
  if text.isascii() and text.isdigit() and int(text) < len(class_names):  # '٣', '²': no
    return int(text)
  return None


def _shown(text: str) -> str:
  """``text`` as it reads, or escaped when it holds invisible characters."""
  return text if text.isprintable() else ascii(text)


def read_answers(path: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
  """(header, [(line number, cells)]) of an answers CSV, or a one-line error.

  Tolerant of what spreadsheets write: a UTF-8 byte-order mark (Excel's "CSV UTF-8") or UTF-16
  with one, ``;`` or tab separators, and header names in any case with spaces around them
  (``ID, Label``). Anything it cannot read as text is refused, naming the line.
  """
  if os.path.isdir(path):
    raise JaxdispError(f'answers file {path} is a directory, not a CSV file')
  if not os.path.exists(path):
    raise JaxdispError(f'answers file {path} does not exist')
  try:
    with open(path, 'rb') as f:
      raw = f.read()
  except OSError as e:
    raise JaxdispError(f'cannot read answers file {path}: {e.strerror or e}') from None
  if raw.startswith(b'PK\x03\x04'):
    raise LabelError(path, ['is a zip file (an Excel workbook?), not CSV: save it as "CSV UTF-8"'])
  utf16 = raw[:2] in (b'\xff\xfe', b'\xfe\xff')
  try:
    text = raw.decode('utf-16' if utf16 else 'utf-8-sig')  # -sig: drops Excel's byte-order mark
  except UnicodeDecodeError as e:
    line = raw.count(b'\n', 0, e.start) + 1
    raise LabelError(path, [f'line {line}: byte 0x{raw[e.start]:02x} is not '
                            f'{"UTF-16" if utf16 else "UTF-8"} text; save the file as "CSV UTF-8"']
                     ) from None
  if not text.strip():
    raise LabelError(path, ['the file is empty (expected a header with columns id,label)'])
  first = text.lstrip().splitlines()[0]
  delimiter = max(',;\t', key=lambda d: sum(1 for h in first.split(d)
                                             if h.strip().lower() in ('id', 'label')))
  reader = csv.reader(io.StringIO(text, newline=''), delimiter=delimiter)
  rows, header = [], None
  try:
    for cells in reader:
      if not any(c.strip() for c in cells):
        continue  # blank line
      if header is None:
        shown = [_shown(c.strip()) for c in cells]
        header = [c.strip().lower() for c in cells]
      else:
        rows.append((reader.line_num, cells))
  except csv.Error as e:
    raise LabelError(path, [f'line {reader.line_num}: not readable as CSV ({e})']) from None
  for name in ('id', 'label'):
    if header.count(name) > 1:
      raise LabelError(path, [f'the header has {header.count(name)} {name!r} columns'])
  if 'id' not in header or 'label' not in header:
    raise LabelError(path, ['needs columns id and label, found: ' + ','.join(shown)])
  if not rows:
    raise LabelError(path, ['has a header but no rows'])
  return header, rows


def validate_answers(path: str, ctx: Context, ledger: dict) -> tuple[list[dict], dict]:
  """Checks a whole answers CSV; returns (new ledger entries, counts) or raises LabelError."""
  header, rows = read_answers(path)
  id_col, label_col = header.index('id'), header.index('label')

  def cell(cells, col):
    return cells[col].strip() if col < len(cells) else ''

  problems, new, seen = [], [], {}
  counts = {'rows': len(rows), 'new': 0, 'already': 0, 'unlabeled': 0}
  classes = ', '.join(ctx.class_names[:12]) + (', ...' if len(ctx.class_names) > 12 else '')
  for n, cells in rows:  # line numbers as an editor shows them (header = line 1)
    raw_id, raw_label = cell(cells, id_col), cell(cells, label_col)
    if not raw_label:
      counts['unlabeled'] += 1
      continue
    if not (raw_id.isascii() and raw_id.isdigit()):
      digits = ' (write it with the digits 0-9)' if any(c.isdigit() for c in raw_id) else ''
      problems.append(f'line {n}: id {raw_id!r} is not a dataset index{digits}')
      continue
    i = int(raw_id)
    if i >= ctx.num_train:
      problems.append(f'line {n}: unknown id {i} (the training set has {ctx.num_train} samples)')
      continue
    if i not in ctx.queried:
      problems.append(f'line {n}: id {i} was never queried (only queried samples take labels)')
      continue
    label = _parse_label(raw_label, ctx.class_names)
    if label is None:
      problems.append(f'line {n}: label {raw_label!r} is not a class ({classes}) or class index')
      continue
    if i in seen and seen[i][1] != label:
      problems.append(f'line {n}: id {i} is labeled {ctx.class_names[label]!r} here but '
                      f'{ctx.class_names[seen[i][1]]!r} on line {seen[i][0]}')
      continue
    if i in ledger:
      if int(ledger[i]['label']) != label:
        problems.append(f'line {n}: id {i} is already labeled '
                        f'{ctx.class_names[int(ledger[i]["label"])]!r} in the ledger; '
                        'labels are never overwritten')
      else:
        counts['already'] += 1
      seen[i] = (n, label)
      continue
    if i not in seen:
      new.append({'id': i, 'label': label, 'class': ctx.class_names[label],
                  'round': ctx.queried[i], 'file': ctx.files.get(i, str(i)),
                  'source': os.path.basename(path), 'imported_at': round(time.time(), 3)})
    seen[i] = (n, label)
  if problems:
    raise LabelError(path, problems)
  counts['new'] = len(new)
  return new, counts


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


def write_queries(workdir: str, round_: int, records: list[dict]) -> str:
  """``queries/round_<r>.csv`` for the annotators; never overwrites one they may be filling."""
  path = os.path.join(workdir, 'queries', f'round_{round_}.csv')
  if os.path.exists(path):
    return path
  lines = [','.join(QUERY_COLUMNS)]
  for r in records:
    row = [str(r['id']), r['file'], f'{r["score"]:.6g}', str(r['modal_label']),
           r['modal_class'] or '', '']
    lines.append(','.join(csv_cell(c) for c in row))
  atomic_write(path, '\n'.join(lines) + '\n')
  return path


def simulated_answers(labels: np.ndarray, num_classes: int, noise: float, seed: int
                      ) -> np.ndarray:
  """The simulated oracle's label for every training sample (``oracle.noise``): the dataset's
  label, or with probability ``noise`` a uniformly random other class. Keyed by ``seed`` alone, so
  every strategy of a seed hears the same answers for the same sample."""
  labels = np.asarray(labels, np.int64)
  if noise <= 0:
    return labels.astype(np.int32)
  rng = np.random.default_rng((int(seed), 0x4E4F4953))  # 'NOIS'
  wrong = rng.random(len(labels)) < noise
  other = (labels + rng.integers(1, num_classes, len(labels))) % num_classes
  return np.where(wrong, other, labels).astype(np.int32)


def how_to_continue(workdir: str, round_: int, num_missing: int) -> str:
  return (f'waiting for labels: {num_missing} queried sample(s) have no label yet. Fill the '
          f'label column of {os.path.join(workdir, "queries", f"round_{round_}.csv")} (class '
          f'name or index), run `python -m jaxdisp.label import --workdir {workdir} --file '
          '<answers.csv>`, then rerun this command')
