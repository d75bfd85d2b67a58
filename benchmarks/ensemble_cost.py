r"""Cost of a deep ensemble's round against one model's (goal: at most K x), vmap vs lax.map.

  python benchmarks/ensemble_cost.py            # the demo config, 5 epochs a round
  python benchmarks/ensemble_cost.py --quick    # the tiny test config, seconds

``strategy=ensemble`` trains K members as one program, the single model's steps mapped over a
stacked member axis (``jaxdisp/train/members.py``): ``train.member_map=vmap`` (one batched
program) or ``map`` (``jax.lax.map``: a scan, one member after another). This script runs, in
one process on one device, the demo config (``configs/demo.py``; ``train.epochs`` cut to
:data:`EPOCHS`: an epoch costs the same whatever the count) as

* ``one model``: ``strategy=entropy`` (one training, one pool pass after it, as the ensemble's
  scoring but with one member);
* ``ensemble K=k <mode>``: ``strategy=ensemble``, ``ensemble.members=k`` and
  ``train.member_map=<mode>``, for every (k, mode) of :data:`CASES`,

each a whole round 0 (``experiment.Runner(exp).round``: train from scratch, test evaluation,
pool scoring, selection) after a warm-up round that compiles it, the timed rounds of all cases
interleaved. Reported per case: the median seconds of training (test evaluation included) and
of scoring, their sum, and ``ratio`` = that sum over one model's (``train_ratio``: training
alone); the goal is ``ratio <= K``. Writes ``<out>/ensemble_cost[_quick].json``.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # pylint: disable=g-import-not-at-top,wrong-import-position

EPOCHS = 5
CASES = [(5, 'vmap'), (5, 'map'), (5, 'loop'), (3, 'vmap'), (3, 'map'), (3, 'loop')]
QUICK_CASES = [(3, 'vmap'), (3, 'map'), (3, 'loop')]


def config(quick: bool, members: int, member_map: str):
  overrides = dict(_common.TINY) if quick else {'train.epochs': EPOCHS}
  overrides.update({'num_devices': 1, 'al.rounds': 1, 'log.pool_diagnostics': False,
                    'log.progress_seconds': 0.0})
  if members == 1:
    overrides['strategy'] = 'entropy'
  else:
    overrides.update({'strategy': 'ensemble', 'ensemble.members': members,
                      'train.member_map': member_map})
  return _common.demo_config(overrides)


def prepare(name: str, cfg, dataset):
  """``round()``: one timed round 0 of ``cfg`` (compiled by a warm-up round first)."""
  # pylint: disable-next=g-import-not-at-top
  from jaxdisp import compile_counter, config_checks, experiment, parallel, rounds
  config_checks.validate(cfg)
  exp = rounds.Experiment.create(cfg, dataset, mesh=parallel.make_mesh(1))
  state0 = exp.initial_state()
  runner = experiment.Runner(exp)
  t0 = time.perf_counter()
  warm = runner.round(state0)
  first = time.perf_counter() - t0
  info = {'case': name, 'members': exp.setup.members, 'member_map': exp.setup.member_map,
          'first_round_s': first, 'test_accuracy': float(warm.test_accuracy[0]),
          'runs': []}

  def one_round():
    before = sum(compile_counter.compile_counts().values())
    t0 = time.perf_counter()
    s = runner.round(state0)
    wall = time.perf_counter() - t0
    train_s, score_s, select_s = (float(x) for x in s.seconds[0])
    assert (s.selected(0) == warm.selected(0)).all()  # a pure function of its input
    info['runs'].append({'wall_s': wall, 'train_s': train_s, 'score_s': score_s,
                         'select_s': select_s,
                         'compilations': sum(compile_counter.compile_counts().values()) - before})

  return info, one_round


def summarise(info: dict, base: dict | None) -> dict:
  med = {k: _common.median([r[k] for r in info['runs']])
         for k in ('wall_s', 'train_s', 'score_s', 'select_s')}
  out = {**info, **med, 'train_and_score_s': med['train_s'] + med['score_s'],
         'compilations_in_timed_rounds': max(r['compilations'] for r in info['runs'])}
  ref = base or out
  out['ratio'] = out['train_and_score_s'] / ref['train_and_score_s']
  out['train_ratio'] = out['train_s'] / ref['train_s']
  out['score_ratio'] = out['score_s'] / ref['score_s']
  return out


def main(argv=None):
  p = _common.parser(__doc__)
  p.add_argument('--reps', type=int, default=0, help='timed rounds per case (default 2, 1 quick)')
  args = p.parse_args(argv)
  _common.quiet_logs()
  import jax  # pylint: disable=g-import-not-at-top
  from jaxdisp import compile_counter, data  # pylint: disable=g-import-not-at-top
  compile_counter.enable()
  t_start = time.perf_counter()
  reps = args.reps or (1 if args.quick else 2)
  cases = [(1, '-')] + (QUICK_CASES if args.quick else CASES)
  dataset = data.load_dataset(config(args.quick, 1, '-').dataset)
  prepared = []
  for k, mode in cases:
    name = 'one model' if k == 1 else f'ensemble K={k} {mode}'
    prepared.append(prepare(name, config(args.quick, k, mode), dataset))
    print(f'  {name}: compiled (first round {prepared[-1][0]["first_round_s"]:.1f} s)',
          flush=True)
  for _ in range(reps):  # interleaved: load from other processes hits every case alike
    for _, one_round in prepared:
      one_round()
  base = summarise(prepared[0][0], None)
  rows = [base] + [summarise(info, base) for info, _ in prepared[1:]]
  by = {(r['members'], r['member_map']): r for r in rows}
  headline = {'members_max': max(k for k, _ in cases), 'one_model_s': base['train_and_score_s'],
              'ratio_by_case': {r['case']: r['ratio'] for r in rows[1:]},
              'auto_on_this_backend': _auto()}
  for mode in ('vmap', 'map'):
    k = headline['members_max']
    if (k, mode) in by:
      headline[f'ratio_k{k}_{mode}'] = by[k, mode]['ratio']
  result = {'benchmark': 'ensemble_cost', 'quick': args.quick, 'machine': _common.machine_info(),
            'epochs': cfg_epochs(args.quick), 'reps': reps, 'cases': rows, 'headline': headline,
            'wall_s': time.perf_counter() - t_start}
  path = _common.write_json(args.out, 'ensemble_cost', args.quick, result)
  info = _common.machine_info()
  print(f'\nround 0 of the {"tiny" if args.quick else "demo"} config ({result["epochs"]} epochs) '
        f'on {jax.default_backend()} ({info.get("cpu_model", info["processor"])}, '
        f'{os.cpu_count()} cores), 1 device, median of {reps}; ratio = (train + score) / one '
        f'model\'s (goal <= K); auto = {headline["auto_on_this_backend"]}; {path}')
  print(_common.table(
      ['case', 'train s', 'score s', 'train+score s', 'ratio', 'train ratio', 'score ratio',
       'first round s', 'compiles'],
      [[r['case'], r['train_s'], r['score_s'], r['train_and_score_s'], r['ratio'],
        r['train_ratio'], r['score_ratio'], r['first_round_s'], r['compilations_in_timed_rounds']]
       for r in rows]))
  return 0


def _auto() -> str:
  import jax  # pylint: disable=g-import-not-at-top
  from jaxdisp import train  # pylint: disable=g-import-not-at-top
  return train.resolve_member_map('auto', jax.default_backend())


def cfg_epochs(quick: bool) -> int:
  return int(config(quick, 1, '-').train.epochs)


if __name__ == '__main__':
  sys.exit(main())
