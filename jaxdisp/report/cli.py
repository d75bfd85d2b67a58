"""Aggregates a sweep's runs into one report: does the strategy beat random, with error bars?

  python -m jaxdisp.report W                 # writes W/report/{report.md, *.png}
  python -m jaxdisp.report W --out docs/results

A bad input prints one ``error: ...`` line and exits with status 2.
"""

from __future__ import annotations

import os
import sys

from jaxdisp.errors import JaxdispError, ReportError
from jaxdisp.files import atomic_write, makedirs, remove_stale_temporaries
from jaxdisp.cli import ArgumentParser
from jaxdisp.report.plots import plot_dispersion_hist, plot_learning_curves
from jaxdisp.report.sections import build


def write_report(workdir: str, out: str | None = None, allow_mixed_models: bool = False) -> str:
  """Writes report.md and the PNGs into ``out`` (default ``workdir/report``); returns report.md.

  Every file is written atomically; the temporaries a killed report left in ``out`` are
  removed first."""
  out = out or os.path.join(workdir, 'report')
  if os.path.lexists(out) and not os.path.isdir(out):
    raise ReportError(f'--out {out} exists and is not a folder: name a folder for report.md and '
                      'its figures (it is made if missing)')
  text, figures = build(workdir, allow_mixed_models)
  makedirs(out)
  remove_stale_temporaries(out)
  title = f'{os.path.basename(os.path.abspath(workdir))}: test accuracy, mean ± std over seeds'
  plot_learning_curves(os.path.join(out, 'learning_curves.png'), figures['curves'], title)
  for name, (s, per_round) in figures['hist'].items():
    plot_dispersion_hist(os.path.join(out, name), s, per_round)
  path = os.path.join(out, 'report.md')
  atomic_write(path, text + '\n')
  return path


def main(argv=None) -> int:
  p = ArgumentParser(prog='python -m jaxdisp.report', description=__doc__.splitlines()[0])
  p.add_argument('workdir', help='folder holding one run per subfolder (<run>/results.json)')
  p.add_argument('--out', default=None, help='output folder (default: WORKDIR/report)')
  p.add_argument('--allow-mixed-models', action='store_true',
                 help='put runs with different model.* keys in one table (with a warning)')
  args = p.parse_args(argv)
  try:
    path = write_report(args.workdir, args.out, args.allow_mixed_models)
  except JaxdispError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(f'report: {path}')
  return 0
