r"""Label import/export for the human oracle (``config.oracle.kind='files'``).

  python -m jaxdisp.label import --workdir W --file answers.csv   # validate, then append
  python -m jaxdisp.label export --workdir W [--out labels.csv]   # every label acquired so far

``answers.csv`` needs columns ``id`` and ``label`` (the ``queries/round_<r>.csv`` the run wrote,
with its ``label`` column filled in, works as is; header names in any case, spaces allowed; UTF-8
with or without Excel's byte-order mark, or UTF-16; ``,`` ``;`` or tab separated); labels are
class names or class indices; rows with an empty label are skipped. One import at a time: a
second one while the ledger is locked exits 2 at once, naming the holder. Any bad row rejects the whole file (one ``error:`` line per bad
row, exit status 2) and leaves the ledger untouched; importing the same answers twice is a no-op.
"""

from __future__ import annotations

import os
import sys

from jaxdisp import cli, files, locking, preemption
from jaxdisp.errors import JaxdispError, LabelError
from jaxdisp.oracle import answers, ledger
from jaxdisp.oracle.queries import csv_cell


def import_labels(workdir: str, path: str) -> dict:
  """Validates ``path`` against the experiment and appends its new labels; returns counts."""
  ctx = answers.context_from_workdir(workdir)
  # One import at a time: read, validate and append under the ledger's lock, so two imports
  # cannot both append a label for one id (issue 17).
  with locking.ledger_lock(ledger.ledger_path(workdir)):
    acquired = ledger.read_ledger(workdir)
    new, counts = answers.validate_answers(path, ctx, acquired)
    ledger.append_ledger(workdir, new)
    preemption.fault_point('label_import')
  queried = set(ctx.queried)
  counts['missing'] = len(queried - set(acquired) - {e['id'] for e in new})
  return counts


def export_labels(workdir: str, out: str) -> int:
  acquired = ledger.read_ledger(workdir)
  lines = ['id,file,label,class,round']
  for i in sorted(acquired):
    e = acquired[i]
    lines.append(','.join(csv_cell(str(v)) for v in
                          (i, e.get('file', i), e['label'], e.get('class', ''), e['round'])))
  files.atomic_write(out, '\n'.join(lines) + '\n')
  return len(acquired)


def main(argv=None) -> int:
  p = cli.ArgumentParser(prog='python -m jaxdisp.label', description=__doc__.splitlines()[0])
  sub = p.add_subparsers(dest='command', required=True)
  imp = sub.add_parser('import', help='validate an answers CSV and append it to the ledger')
  imp.add_argument('--workdir', required=True)
  imp.add_argument('--file', required=True)
  exp = sub.add_parser('export', help='write every acquired label as CSV')
  exp.add_argument('--workdir', required=True)
  exp.add_argument('--out', default='', help='default: <workdir>/labels_export.csv')
  args = p.parse_args(argv)
  try:
    if not files.is_dir(args.workdir):
      raise JaxdispError(f'--workdir {args.workdir} does not exist')
    if args.command == 'import':
      c = import_labels(args.workdir, args.file)
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
