r"""Accuracy vs labeled count for several strategies and seeds on one config (default: the demo).

  python benchmarks/compare_strategies.py                     # demo: dispersion/entropy/random x 3 seeds
  python benchmarks/compare_strategies.py --quick             # 1 seed, tiny, for the smoke test
  python benchmarks/compare_strategies.py --config configs/demo.py --strategies dispersion,random \
      --seeds 0,1 --set train.epochs=20

Each (strategy, seed) is a full experiment in ``<out>/runs/<strategy>-seed<seed>`` (resumable: a
rerun skips finished ones). Writes ``<out>/compare_strategies.json`` and prints mean +- std test
accuracy per labeled count.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

QUICK = {'dataset.num_train': 600, 'dataset.num_test': 200, 'dataset.image_size': 16,
         'model.width': 8, 'train.epochs': 4, 'train.batch_size': 32,
         'train.eval_batch_size': 128, 'al.initial_size': 100, 'al.budget': 50, 'al.rounds': 1}


def load_config(path: str, overrides: dict):
  from jaxdisp import cli, config_lib  # pylint: disable=g-import-not-at-top
  cfg = cli.load_config(path)
  flat = config_lib.flatten(cfg)
  for key, value in overrides.items():
    current = flat.get(key)
    config_lib.set_key(cfg, key, value if isinstance(current, tuple) or current is None
                       else type(current)(value))
  return cfg


def parse_set(items):
  out = {}
  for item in items:
    key, _, value = item.partition('=')
    try:
      out[key] = json.loads(value)
    except json.JSONDecodeError:
      out[key] = value
  return out


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--config', default=os.path.join(REPO, 'configs', 'demo.py'))
  p.add_argument('--strategies', default='dispersion,entropy,random')
  p.add_argument('--seeds', default='0,1,2')
  p.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                 help='config override, e.g. train.epochs=20 (repeatable)')
  p.add_argument('--out', default=os.path.join(HERE, 'results'))
  p.add_argument('--quick', action='store_true', help='tiny config, one seed (smoke test)')
  args = p.parse_args(argv)

  from jaxdisp import experiment, strategies as registry, sweep  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top

  overrides = parse_set(args.set)
  seeds = [int(s) for s in args.seeds.split(',')]
  if args.quick:
    overrides, seeds = {**QUICK, **overrides}, seeds[:1]
  strategies = args.strategies.split(',')
  name = 'compare_strategies_quick' if args.quick else 'compare_strategies'
  runs_dir = os.path.join(args.out, 'runs', name)  # git-ignored: checkpoints live here
  for strategy in strategies:  # one network for every strategy (no dropout for BALD alone)
    sweep.check_shared_network(registry.get(strategy), load_config(args.config, overrides))
  table = {}
  for strategy in strategies:
    for seed in seeds:
      cfg = load_config(args.config, {**overrides, 'strategy': strategy, 'seed': seed})
      workdir = os.path.join(runs_dir, f'{strategy}-seed{seed}')
      t0 = time.perf_counter()
      state = experiment.run(cfg, workdir)
      for r in range(int(state.round)):
        table.setdefault(strategy, {}).setdefault(int(state.num_labeled[r]), []).append(
            float(state.test_accuracy[r]))
      print(f'{strategy} seed {seed}: {time.perf_counter() - t0:.0f} s', flush=True)

  result = {
      'benchmark': 'compare_strategies', 'config': args.config, 'overrides': overrides,
      'seeds': seeds, 'machine': {'platform': platform.platform(), 'processor': platform.processor(),
                                  'cpu_count': os.cpu_count(), 'jax': jax.__version__,
                                  'devices': [str(d) for d in jax.devices()]},
      'accuracy': {s: {str(n): accs for n, accs in sorted(per.items())} for s, per in table.items()},
  }
  os.makedirs(args.out, exist_ok=True)
  path = os.path.join(args.out, f'{name}.json')
  with open(path, 'w') as f:
    json.dump(result, f, indent=1)

  counts = sorted({n for per in table.values() for n in per})
  print(f'\ntest accuracy (mean +- std over {len(seeds)} seed(s)), {path}')
  print('labeled  ' + ''.join(f'{s:>18}' for s in strategies))
  for n in counts:
    cells = []
    for s in strategies:
      accs = np.array(table[s].get(n, [np.nan])) * 100
      cells.append(f'{accs.mean():8.2f} +- {accs.std():5.2f}')
    print(f'{n:7d}  ' + ''.join(f'{c:>18}' for c in cells))
  return result


if __name__ == '__main__':
  main()
