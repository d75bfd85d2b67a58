r"""One whole run of ``configs/cifar10_features.py`` (the paper's protocol on frozen features).

  python benchmarks/features_round.py --npz cifar10_kmeans.npz            # dispersion and random
  python benchmarks/features_round.py --npz cifar10_kmeans.npz --strategies all
  python benchmarks/features_round.py --quick   # blobs of 1,200 x 32 made here, seconds

The target (issue 24): at most :data:`TARGET_S` seconds per run on 2 CPU cores with the default
embedding. Each run is the real command in a fresh process (``benchmarks/demo_strategies.py``'s
``run_one``), timed from start to exit: startup, loading the ``.npz``, compilation and all
6 rounds (5,000 initial labels, +2,500 per round, T = 100 epochs with the whole pool scored
after every epoch). The train, score and select seconds, summed over the rounds, come from the
run's ``results.json``. Writes ``<out>/features_round[_quick].json`` and prints a table.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np

from _common import machine_info, parser, table, write_json
from demo_strategies import run_one

TARGET_S = 60.0
QUICK = {'al.initial_size': 100, 'al.budget': 50, 'al.rounds': 2, 'train.epochs': 10,
         'train.batch_size': 32}


def blobs(path: str, n: int = 1200, m: int = 300, dim: int = 32, classes: int = 10) -> str:
  """Class-separable Gaussian blobs as an embeddings ``.npz`` (for --quick)."""
  rng = np.random.default_rng(0)
  centres = rng.normal(size=(classes, dim))
  y_train, y_test = rng.integers(0, classes, n), rng.integers(0, classes, m)
  x = lambda y: (centres[y] + rng.normal(size=(len(y), dim))).astype(np.float32)
  np.savez(path, x_train=x(y_train), y_train=y_train, x_test=x(y_test), y_test=y_test)
  return path


def main(argv=None):
  p = parser(__doc__)
  p.add_argument('--npz', default='', help='the embeddings (.npz or folder of .npy); '
                 'required unless --quick')
  p.add_argument('--strategies', default='dispersion,random',
                 help="comma-separated, or 'all' for every built-in (default: %(default)s)")
  p.add_argument('--override', action='append', default=[],
                 help='KEY=VALUE config override (repeatable), e.g. model.name=mlp')
  args = p.parse_args(argv)
  from jaxdisp import strategies  # pylint: disable=g-import-not-at-top
  names = (strategies.builtin_names() if args.strategies == 'all' else
           [s for s in args.strategies.split(',') if s])
  tmp = tempfile.mkdtemp(prefix='features_round-')
  npz = args.npz or (blobs(os.path.join(tmp, 'blobs.npz')) if args.quick else '')
  if not npz:
    raise SystemExit('error: --npz names the embeddings (make them with python -m jaxdisp.embed)'
                     ', or use --quick')
  overrides = {'dataset.root': os.path.abspath(npz), **(QUICK if args.quick else {})}
  overrides.update(kv.split('=', 1) for kv in args.override)
  runs = []
  try:
    for s in names:
      r = run_one(s, os.path.join(tmp, s), overrides, config='cifar10_features.py')
      runs.append(r)
      print(f'{s}: {r["wall_s"]:.1f} s', flush=True)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  slowest = max(runs, key=lambda r: r['wall_s'])
  result = {
      'benchmark': 'features_round', 'quick': args.quick, 'machine': machine_info(),
      'npz': None if args.quick else os.path.abspath(npz), 'overrides': overrides, 'target_s': TARGET_S, 'runs': runs,
      'headline': {'slowest_strategy': slowest['strategy'], 'slowest_wall_s': slowest['wall_s'],
                   'within_target': {r['strategy']: r['wall_s'] <= TARGET_S for r in runs}},
  }
  path = write_json(args.out, 'features_round', args.quick, result)
  print(f'\nconfigs/cifar10_features.py on {npz}; target <= {TARGET_S:g} s per run\n')
  print(table(['strategy', 'wall s', 'train s', 'score s', 'select s', 'final acc', 'rounds'],
              [[r['strategy'], r['wall_s'], r['train_s'], r['score_s'], r['select_s'],
                r['final_accuracy'], r['rounds']] for r in runs]))
  print(f'\n{path}')
  return result


if __name__ == '__main__':
  main()
