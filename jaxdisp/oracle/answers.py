"""The human oracle's answers: an annotators' CSV read and checked against the experiment.

:func:`validate_answers` checks a whole file before anything is imported: every bad row is
reported (one line each), and a file with any bad row imports nothing.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import time

from jaxdisp import files
from jaxdisp.errors import JaxdispError, LabelError


@dataclasses.dataclass(frozen=True)
class Context:
  """What validation needs to know about the experiment (read from results.json)."""
  num_train: int
  class_names: tuple
  queried: dict  # dataset id -> round it was queried in
  files: dict  # dataset id -> file name / id string
  oracle_kind: str = 'files'  # the run's config.oracle.kind


BY = ('auto', 'name', 'index')  # how a label is read: see _parse_label


def _read_json_lines(path: str) -> list:
  """The JSON documents of ``path`` (one document, or one per line for ``.jsonl``), or a
  one-line error naming the file: unreadable, not UTF-8 or not JSON."""
  try:
    text = files.read_text(path)
  except (OSError, UnicodeDecodeError) as e:
    why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
    raise JaxdispError(f'cannot read {path}: {why}') from None
  jsonl = path.endswith('.jsonl')
  docs = []
  for n, line in enumerate(text.splitlines() if jsonl else [text], 1):
    if jsonl and not line.strip():
      continue
    try:
      docs.append(json.loads(line))
    except json.JSONDecodeError as e:
      raise JaxdispError(f'{path} is corrupt: line {n if jsonl else e.lineno} is not JSON '
                         f'({e.msg}); it is not a file a jaxdisp run wrote whole') from None
  return docs


def _not_a_run(path: str, e: Exception) -> JaxdispError:
  what = f'it has no {e}' if isinstance(e, KeyError) else 'unexpected contents'
  return JaxdispError(f'{path} is not what a jaxdisp run writes ({what})')


def context_from_workdir(workdir: str) -> Context:
  """The :class:`Context` of the run in ``workdir``, or a one-line error: no run there, or a
  results.json / selections.jsonl that is not what a run writes."""
  path = os.path.join(workdir, 'results.json')
  if not files.exists(path):
    raise JaxdispError(f'{workdir} is not the workdir of a run (it has no results.json): '
                       'run the experiment first, or pass the run\'s --workdir')
  res = _read_json_lines(path)[0]
  try:
    queried = {int(i): int(r['round']) for r in res['rounds'] for i in r['selected']}
    ds = res['dataset']
    num_train, class_names = int(ds['num_train']), tuple(str(c) for c in ds['class_names'])
    kind = str((res.get('config') or {}).get('oracle', {}).get('kind', 'files'))
  except (KeyError, TypeError, ValueError, AttributeError) as e:
    raise _not_a_run(path, e) from None
  sel_path = os.path.join(workdir, 'selections.jsonl')
  try:
    names = {int(s['id']): str(s.get('file', s['id']))
             for s in (_read_json_lines(sel_path) if files.exists(sel_path) else [])}
  except (KeyError, TypeError, ValueError, AttributeError) as e:
    raise _not_a_run(sel_path, e) from None
  return Context(num_train, class_names, queried, names, kind)


def _parse_label(text: str, class_names: tuple, by: str = 'auto'):
  """(class index, None) of an answer, or (None, why it is refused).

  ``by='name'``: a class name; ``'index'``: a class index (digits 0-9); ``'auto'``: either, but
  an answer that is one class's name and another class's index (``1`` with class folders
  ``1/ 2/ 3/``) is refused rather than guessed.
  """
  text = text.strip()
  name = class_names.index(text) if text in class_names else None
  index = (int(text) if text.isascii() and text.isdigit() and int(text) < len(class_names)
           else None)  # '٣', '²': not indices
  if by == 'name':
    return name, None if name is not None else 'is not a class name'
  if by == 'index':
    return index, None if index is not None else (
        f'is not a class index (0-{len(class_names) - 1})')
  if name is not None and index is not None and name != index:
    return None, (f'is ambiguous: the class named {text!r} (index {name}) or the class with '
                  f'index {index} ({class_names[index]!r}); say which with --by name or '
                  '--by index')
  if name is None and index is None:
    return None, 'is not a class'
  return (name if name is not None else index), None


def _shown(text: str) -> str:
  """``text`` as it reads, or escaped when it holds invisible characters."""
  return text if text.isprintable() else ascii(text)


def read_answers(path: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
  """(header, [(line number, cells)]) of an answers CSV, or a one-line error.

  Tolerant of what spreadsheets write: a UTF-8 byte-order mark (Excel's "CSV UTF-8") or UTF-16
  with one, ``;`` or tab separators, and header names in any case with spaces around them
  (``ID, Label``). Anything it cannot read as text is refused, naming the line.
  """
  if files.is_dir(path):
    raise JaxdispError(f'answers file {path} is a directory, not a CSV file')
  if not files.exists(path):
    raise JaxdispError(f'answers file {path} does not exist')
  try:
    raw = files.read_bytes(path)
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


def validate_answers(path: str, ctx: Context, ledger: dict, by: str = 'auto'
                     ) -> tuple[list[dict], dict]:
  """Checks a whole answers CSV; returns (new ledger entries, counts) or raises LabelError.

  ``by``: how labels are read (:data:`BY`, see :func:`_parse_label`).
  """
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
    label, why = _parse_label(raw_label, ctx.class_names, by)
    if label is None:
      if why == 'is not a class':
        why = f'is not a class ({classes}) or class index'
      elif why == 'is not a class name':
        why += f' ({classes})'
      ident = f'id {i}: ' if why.startswith('is ambiguous') else ''
      problems.append(f'line {n}: {ident}label {raw_label!r} {why}')
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

