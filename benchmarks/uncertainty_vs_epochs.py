r"""How each uncertainty score's AUROC / AUPR moves with T, the number of recorded epochs.

  python benchmarks/uncertainty_vs_epochs.py --config configs/cifar10_cpu.py \
      --epochs 20,50,100 --seeds 0,1,2 --workdir /work/runs/uncertainty_vs_T
  python benchmarks/uncertainty_vs_epochs.py --quick          # tiny synthetic, the smoke test

For each T, one ``jaxdisp.sweep`` (strategy ``random``, the given seeds) with ``train.epochs=T``,
every epoch recorded (``dispersion.record_every=1``, ``record_from_epoch=0``, so T = epochs),
``al.rounds=0`` and ``log.final_diagnostics=True``: the initial model alone, trained T epochs on
the initial labels, scores the pool, and ``dispersion.record_always=True`` keeps the prediction
history and every running statistic, so all seven scores (dispersion, flips, variability, margin
dynamics from the T recorded epochs; entropy, margin, BALD from the final model) rank the same
pool for the same model. Each sweep is resumable (a rerun skips finished runs) and writes its own
report (``<workdir>/T<T>/report/report.md``). This script then reads every run's diagnostics with
``jaxdisp.report`` and writes ``<out>/uncertainty_vs_epochs[_quick].json`` and a table: per score
and T, AUROC and AUPR for finding the model's mistakes on the pool, mean ± sample std over seeds.
"""

from __future__ import annotations

import os
import subprocess
import sys

import _common  # pylint: disable=g-bad-import-order

QUICK = {'dataset.num_train': 600, 'dataset.num_test': 200, 'dataset.image_size': 16,
         'model.width': 8, 'train.batch_size': 32, 'train.eval_batch_size': 128,
         'al.initial_size': 100, 'checkpoint.every_epochs': 2}
FIXED = {'al.rounds': 0, 'log.final_diagnostics': True, 'dispersion.record_always': True,
         'dispersion.record_every': 1, 'dispersion.record_from_epoch': 0}


def run_sweep(config: str, epochs: int, seeds, workdir: str, overrides: dict) -> None:
  args = [sys.executable, '-m', 'jaxdisp.sweep', '--config', config, '--strategies', 'random',
          '--seeds', ','.join(map(str, seeds)), '--workdir', workdir]
  for key, value in {**overrides, **FIXED, 'train.epochs': epochs}.items():
    args += ['--set', f'{key}={value}']
  proc = subprocess.run(args, cwd=_common.REPO)
  if proc.returncode:
    raise SystemExit(f'error: the sweep for T={epochs} failed (exit {proc.returncode}): '
                     + ' '.join(args))


def summarize(workdir: str, seeds) -> dict:
  """{score: {'auroc': [per seed], 'aupr': [...], 'error_rate': [...]}} of round 0, over the
  runs of ``seeds`` only (a workdir may hold more: every T is compared on the same seeds)."""
  from jaxdisp import report  # pylint: disable=g-import-not-at-top
  runs = [r for r in report.load_runs(workdir) if r.seed in seeds]
  rows, _, problems = report.collect_diagnostics(runs)
  if problems:
    raise SystemExit(f'error: unreadable diagnostics in {workdir}: {problems[0]}')
  return {r['score']: {'auroc': list(r['auroc']), 'aupr': list(r['aupr']),
                       'error_rate': list(r['error_rate']), 'runs': r['runs']}
          for r in rows if r['round'] == 0}


def main(argv=None) -> int:
  p = _common.parser(__doc__)
  p.add_argument('--config', default=os.path.join(_common.REPO, 'configs', 'demo.py'))
  p.add_argument('--epochs', default='20,50,100', help='comma-separated T values')
  p.add_argument('--seeds', default='0,1,2')
  p.add_argument('--workdir', default=None, help='one sweep per T in <workdir>/T<T>')
  p.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                 help='config override for every run (repeatable)')
  args = p.parse_args(argv)
  overrides = dict(kv.split('=', 1) for kv in args.set)
  epochs = [int(e) for e in args.epochs.split(',')]
  seeds = [int(s) for s in args.seeds.split(',')]
  if args.quick:
    overrides = {**QUICK, **overrides}
    epochs, seeds = [2, 4], [0]
  workdir = args.workdir or os.path.join(_common.tempfile.mkdtemp(), 'uncertainty_vs_epochs')
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jaxdisp import report  # pylint: disable=g-import-not-at-top
  result = {'benchmark': 'uncertainty_vs_epochs', 'quick': args.quick,
            'machine': _common.machine_info(), 'config': os.path.relpath(os.path.abspath(args.config), _common.REPO),
            'overrides': overrides, 'seeds': seeds, 'epochs': epochs, 'by_T': {}}
  for t in epochs:
    where = os.path.join(workdir, f'T{t}')
    run_sweep(args.config, t, seeds, where, overrides)
    result['by_T'][str(t)] = summarize(where, seeds)
  scores = list(dict.fromkeys(name for t in epochs for name in result['by_T'][str(t)]))
  rows = []
  for name in scores:
    for metric in ('auroc', 'aupr'):
      row = [name, metric.upper()]
      for t in epochs:
        v = result['by_T'][str(t)].get(name, {}).get(metric, [])
        row.append(report.mean_std(v, 3))
      rows.append(row)
  err = [np.mean(result['by_T'][str(t)][scores[0]]['error_rate']) for t in epochs] if scores else []
  result['mean_error_rate'] = err
  path = _common.write_json(args.out, 'uncertainty_vs_epochs', args.quick, result)
  print(_common.table(['score', 'metric'] + [f'T={t}' for t in epochs], rows))
  print('error rate of the model on the pool: '
        + ', '.join(f'T={t}: {e:.3f}' for t, e in zip(epochs, err)))
  print(f'wrote {path}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
