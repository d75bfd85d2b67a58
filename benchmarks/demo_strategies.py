r"""Every built-in strategy on ``configs/demo.py``: seconds per run against ``random``'s.

  python benchmarks/demo_strategies.py              # every built-in, the demo as a user runs it
  python benchmarks/demo_strategies.py --quick      # 3 strategies on the tiny config (smoke test)
  python benchmarks/demo_strategies.py --strategies vaal,ensemble

The promise measured (issue 23): ``python -m jaxdisp.main --config configs/demo.py
--config.strategy=S`` takes at most ``GOAL`` x the time of ``strategy=random`` for every built-in
S, with the demo-sized settings ``configs/demo.py`` gives each strategy's config group (listed in
the table). Each run is the real command in a fresh process, timed from start to exit (startup,
compilation and every round: what a user waits for), in a fresh workdir. ``random`` runs first
and last; its mean is the reference, and the two runs show how much the machine's load drifted.
The per-phase seconds (train, score, select, summed over rounds) come from each run's
``results.json``. Writes ``<out>/demo_strategies[_quick].json`` and prints a table.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

from _common import REPO, TINY, machine_info, parser, table, write_json

GOAL = 3.0
# A strategy that needs Monte-Carlo dropout (bald) is refused on the demo's dropout-free network
# with one line asking for this; the demo command is then run with it.
DROPOUT = {'model.dropout': 0.3}


def demo_settings(strategy: str) -> dict:
  """The keys of ``strategy``'s config group that ``configs/demo.py`` sets away from the
  defaults (its demo-sized settings)."""
  from jaxdisp import cli, config_lib, strategies  # pylint: disable=g-import-not-at-top
  demo = config_lib.flatten(cli.load_config(os.path.join(REPO, 'configs', 'demo.py')))
  base = config_lib.flatten(config_lib.base_config())
  group = strategies.get(strategy).config_group or strategy
  return {k: v for k, v in demo.items() if k.startswith(group + '.') and base.get(k) != v}


def run_one(strategy: str, workdir: str, overrides: dict, config: str = 'demo.py') -> dict:
  """``python -m jaxdisp.main --config configs/<config>`` for ``strategy`` in a fresh process:
  wall seconds and phase seconds."""
  shutil.rmtree(workdir, ignore_errors=True)
  cmd = [sys.executable, '-m', 'jaxdisp.main', '--config', os.path.join(REPO, 'configs', config),
         '--workdir', workdir, f'--config.strategy={strategy}']
  cmd += [f'--config.{k}={v}' for k, v in overrides.items()]
  env = {**os.environ, 'PYTHONPATH': REPO + os.pathsep + os.environ.get('PYTHONPATH', '')}
  env.pop('XLA_FLAGS', None)  # one device, as a user's first run
  t0 = time.perf_counter()
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
  wall = time.perf_counter() - t0
  if proc.returncode != 0:
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:]
    raise SystemExit(f'error: strategy={strategy} exited {proc.returncode}: {tail}')
  with open(os.path.join(workdir, 'results.json')) as f:
    rounds = json.load(f)['rounds']
  phases = {p: sum(r.get('seconds', {}).get(p, 0.0) for r in rounds)
            for p in ('train', 'score', 'select')}
  return {'strategy': strategy, 'wall_s': wall, **{f'{p}_s': s for p, s in phases.items()},
          'final_accuracy': rounds[-1]['test_accuracy'], 'rounds': len(rounds)}


def main(argv=None):
  p = parser(__doc__)
  p.add_argument('--strategies', default='',
                 help='comma-separated (default: every built-in; random is always measured)')
  args = p.parse_args(argv)
  from jaxdisp import strategies  # pylint: disable=g-import-not-at-top
  names = [s for s in (args.strategies.split(',') if args.strategies else
                       strategies.builtin_names()) if s and s != 'random']
  if args.quick and not args.strategies:
    names = ['dispersion', 'entropy']
  overrides = dict(TINY, **{'al.rounds': 1, 'train.epochs': 2}) if args.quick else {}
  runs_dir = os.path.join(args.out, 'runs', 'demo_strategies_quick' if args.quick
                          else 'demo_strategies')
  order = ['random'] + names + ['random']
  runs = []
  for i, s in enumerate(order):
    extra = dict(DROPOUT) if strategies.get(s).needs_dropout else {}  # what the error asks for
    r = run_one(s, os.path.join(runs_dir, f'{i:02d}-{s}'), {**overrides, **extra})
    r['extra_overrides'] = extra
    runs.append(r)
    print(f'{s}: {r["wall_s"]:.1f} s', flush=True)
  reference = (runs[0]['wall_s'] + runs[-1]['wall_s']) / 2
  rows = []
  for r in runs[1:-1]:
    r['ratio_to_random'] = r['wall_s'] / reference
    r['demo_settings'] = demo_settings(r['strategy'])
    rows.append(r)
  worst = max(rows, key=lambda r: r['ratio_to_random'])
  result = {
      'benchmark': 'demo_strategies', 'quick': args.quick, 'machine': machine_info(),
      'overrides': overrides, 'goal_ratio': GOAL,
      'random_wall_s': [runs[0]['wall_s'], runs[-1]['wall_s']], 'runs': runs,
      'headline': {'random_wall_s': reference, 'max_ratio_to_random': worst['ratio_to_random'],
                   'slowest_strategy': worst['strategy'],
                   'all_within_goal': all(r['ratio_to_random'] <= GOAL for r in rows)},
  }
  path = write_json(args.out, 'demo_strategies', args.quick, result)
  print(f'\nconfigs/demo.py, one device; random: {runs[0]["wall_s"]:.1f} s first, '
        f'{runs[-1]["wall_s"]:.1f} s last (reference: their mean); goal <= {GOAL:g}x\n')
  print(table(['strategy', 'wall s', 'x random', 'train s', 'score s', 'select s',
               'final acc', 'demo-sized settings'],
              [[r['strategy'], r['wall_s'], r['ratio_to_random'], r['train_s'], r['score_s'],
                r['select_s'], r['final_accuracy'],
                ', '.join(f'{k}={v}' for k, v in {**r['demo_settings'],
                                                  **r['extra_overrides']}.items()) or '(defaults)']
               for r in rows]))
  print(f'\n{path}')
  return result


if __name__ == '__main__':
  main()
