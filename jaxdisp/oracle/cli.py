r"""Label import/export for the human oracle (``config.oracle.kind='files'``).

  python -m jaxdisp.label import --workdir W --file answers.csv [--by name|index]
  python -m jaxdisp.label export --workdir W [--out labels.csv]   # every label acquired so far

``answers.csv`` needs columns ``id`` and ``label`` (the ``queries/round_<r>.csv`` the run wrote,
with its ``label`` column filled in, works as is; header names in any case, spaces allowed; UTF-8
with or without Excel's byte-order mark, or UTF-16; ``,`` ``;`` or tab separated); labels are
class names or class indices; rows with an empty label are skipped. An answer that is one
class's name and another class's index (``1`` with class folders ``1/ 2/ 3/``) is refused unless
``--by name`` or ``--by index`` says how to read the labels. One import at a time: a second one
while the ledger is locked exits 2 at once, naming the holder. Any bad row rejects the whole file
(one ``error:`` line per bad row, exit status 2) and leaves the ledger untouched; importing the
same answers twice is a no-op. A ledger's last line torn by a crash mid-import is set aside
(``labels.jsonl.torn-<time>``) with one warning line, and the import goes on.
"""

from __future__ import annotations

import os
import sys

from jaxdisp import cli, files, locking, preemption
from jaxdisp.errors import JaxdispError, LabelError
from jaxdisp.oracle import answers, ledger
from jaxdisp.oracle.queries import csv_cell


def import_labels(workdir: str, path: str, by: str = 'auto') -> dict:
  """Validates ``path`` against the experiment and appends its new labels; returns counts.

  ``by``: how labels are read: ``'name'``, ``'index'``, or ``'auto'`` (either, refusing an
  answer that is one class's name and another's index).
  """
  ctx = answers.context_from_workdir(workdir)
  if ctx.oracle_kind != 'files':
    raise JaxdispError(
        f'{workdir} is a run with oracle.kind={ctx.oracle_kind}: it takes its labels from the '
        'dataset and never reads a label ledger, so nothing is imported; to label by hand, '
        'start a run with --config.oracle.kind=files in a new workdir')
  # One import at a time: read, validate and append under the ledger's lock, so two imports
  # cannot both append a label for one id (issue 17).
  with locking.ledger_lock(ledger.ledger_path(workdir)):
    warning = ledger.repair_tail(workdir, locked=True)  # never append after a torn line
    if warning:
      print(warning, file=sys.stderr, flush=True)
    acquired = ledger.read_ledger(workdir)
    new, counts = answers.validate_answers(path, ctx, acquired, by)
    ledger.append_ledger(workdir, new)
    preemption.fault_point('label_import')
  queried = set(ctx.queried)
  counts['missing'] = len(queried - set(acquired) - {e['id'] for e in new})
  return counts


def export_labels(workdir: str, out: str) -> int:
  """Writes every label of the ledger to ``out`` as CSV; returns how many."""
  answers.context_from_workdir(workdir)  # a one-line error, writing nothing, if no run is there
  ledger.repair_tail_and_warn(workdir)
  acquired = ledger.read_ledger(workdir)
  lines = ['id,file,label,class,round']
  for i in sorted(acquired):
    e = acquired[i]
    lines.append(','.join(csv_cell(str(v)) for v in
                          (i, e.get('file', i), e['label'], e.get('class', ''), e.get('round', ''))))
  if files.is_dir(out):
    raise JaxdispError(f'--out {out} is a folder: name the CSV file to write')
  try:
    files.atomic_write(out, '\n'.join(lines) + '\n')
  except OSError as e:
    raise JaxdispError(f'cannot write {out}: {e.strerror or e}') from None
  return len(acquired)


def main(argv=None) -> int:
  p = cli.ArgumentParser(prog='python -m jaxdisp.label', description=__doc__.splitlines()[0])
  sub = p.add_subparsers(dest='command', required=True)
  imp = sub.add_parser('import', help='validate an answers CSV and append it to the ledger')
  imp.add_argument('--workdir', required=True)
  imp.add_argument('--file', required=True)
  imp.add_argument('--by', choices=answers.BY, default='auto',
                   help='labels are class names, class indices, or (auto) either; auto refuses '
                        'an answer that is one class\'s name and another class\'s index')
  exp = sub.add_parser('export', help='write every acquired label as CSV')
  exp.add_argument('--workdir', required=True)
  exp.add_argument('--out', default='', help='default: <workdir>/labels_export.csv')
  args = p.parse_args(argv)
  try:
    cli.check_utf8_path(args.workdir)
    if not files.is_dir(args.workdir):
      raise JaxdispError(f'--workdir {args.workdir} does not exist')
    if args.command == 'import':
      c = import_labels(args.workdir, args.file, args.by)
      print(f'imported {c["new"]} new label(s) into {ledger.ledger_path(args.workdir)} '
            f'({c["already"]} already there, {c["unlabeled"]} row(s) without a label); '
            f'{c["missing"]} queried sample(s) still unlabeled')
    else:
      out = args.out or os.path.join(args.workdir, 'labels_export.csv')
      n = export_labels(args.workdir, out)
      print(f'wrote {n} label(s) to {out}')
  except LabelError as e:
    for problem in e.problems:
      print(f'error: {args.file}: {problem}', file=sys.stderr)
    print(f'error: nothing imported ({len(e.problems)} bad row(s)); the ledger is unchanged',
          file=sys.stderr)
    return 2
  except JaxdispError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  return 0
