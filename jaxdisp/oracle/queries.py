"""The human oracle's questions: ``queries/round_<r>.csv``, and what to do next."""

from __future__ import annotations

import os

from jaxdisp import files

QUERY_COLUMNS = ('id', 'file', 'score', 'hint_label', 'hint_class', 'label')


def csv_cell(text: str) -> str:
  """One CSV cell, quoted when it holds a comma, a quote or a newline. A file name that is not
  valid UTF-8 (kept by os.listdir as surrogates) is written with U+FFFD in its place: the id
  identifies the sample, the name is for people."""
  text = text.encode('utf-8', 'surrogateescape').decode('utf-8', 'replace')
  return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text


def query_path(workdir: str, round_: int) -> str:
  return os.path.join(workdir, 'queries', f'round_{round_}.csv')


def write_queries(workdir: str, round_: int, records: list[dict]) -> str:
  """``queries/round_<r>.csv`` for the annotators: dataset id, file, score, the model's modal
  prediction as a hint, an empty ``label`` column. Never overwrites one they may be filling."""
  path = query_path(workdir, round_)
  if files.exists(path):
    return path
  lines = [','.join(QUERY_COLUMNS)]
  for r in records:
    row = [str(r['id']), r['file'], f'{r["score"]:.6g}', str(r['modal_label']),
           r['modal_class'] or '', '']
    lines.append(','.join(csv_cell(c) for c in row))
  files.atomic_write(path, '\n'.join(lines) + '\n')
  return path


def how_to_continue(workdir: str, round_: int, num_missing: int) -> str:
  return (f'waiting for labels: {num_missing} queried sample(s) have no label yet. Fill the '
          f'label column of {query_path(workdir, round_)} (class '
          f'name or index), run `python -m jaxdisp.label import --workdir {workdir} --file '
          '<answers.csv>`, then rerun this command')
