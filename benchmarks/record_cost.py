r"""Cost of the training-dynamics statistics in the per-epoch record pass (goal: at most 1.1x).

  python benchmarks/record_cost.py            # small CNN w16 (C = 10, 64) and ResNet18 w16
  python benchmarks/record_cost.py --quick    # small CNN w8 on 16x16, seconds

After every recorded epoch ``train.record_pool`` runs the model over the unlabeled pool once (eval
mode, chunks of ``eval_batch_size``) and writes each sample's predicted label into the int8
history. With the dynamics strategies it also keeps running statistics from the same logits
(``train.STATS``): ``prob_moments`` (Welford mean and M2 of the top-1 probability, for
``variability``) and ``margin_sum`` (top-1 minus top-2 logit, for ``margin_dynamics``); ``flips``
needs nothing beyond the history. This script times the jitted record pass of one device

* ``history``: the record pass as ``dispersion`` and ``flips`` run it (labels only);
* ``all_stats``: the same pass with every statistic on (labels + ``prob_moments`` +
  ``margin_sum``),

on the same random weights, pool and chunking, the history and statistics donated as in the
compiled epoch, interleaved repetitions after a warm-up call (compilation excluded); ``ratio =
all_stats / history`` (median of each; ``ratio_min`` from the fastest runs). Writes
``<out>/record_cost[_quick].json``.
"""

from __future__ import annotations

import functools
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # pylint: disable=g-import-not-at-top,wrong-import-position
import _rounds  # pylint: disable=g-import-not-at-top,wrong-import-position

ALL_STATS = ('margin_sum', 'prob_moments')
GOAL = 1.1
# (name, spec of benchmarks/_rounds.py, changes, repetitions)
CASES = [
    ('small_cnn16', 'small_cnn16', {}, 15),
    ('small_cnn16_c64', 'small_cnn16', {'num_classes': 64}, 15),  # synthetic data: <= 64
    ('resnet18_16', 'resnet18_16', {}, 7),
]
QUICK = [('quick', 'quick', {}, 5)]


def measure(name: str, spec: dict, reps: int) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jaxdisp import input_pipeline, parallel, train  # pylint: disable=g-import-not-at-top
  cfg = _rounds.config(spec)
  ds = _rounds.dataset(tuple(sorted(spec.items())))
  mesh = parallel.make_mesh(1)
  t0 = time.perf_counter()
  data = input_pipeline.put_data(ds, mesh)
  fns, state = {}, None
  for variant, kinds in (('history', ()), ('all_stats', ALL_STATS)):
    setup = train.make_setup(cfg, mesh, ds.image_shape, ds.num_classes, record=True,
                             stats=kinds)
    if state is None:
      state = _rounds.random_train_state(setup)
    pool, num_pool = train.index_buffer(np.arange(spec['labeled'], spec['labeled'] + spec['pool']),
                                        train.pool_capacity(setup, spec['pool']), mesh)
    record = jax.jit(functools.partial(train.record_pool, setup), donate_argnums=(2, 3))
    box = {'history': train.empty_history(setup, pool.shape[0]),
           'stats': train.empty_stats(setup, pool.shape[0])}

    def run(record=record, box=box, pool=pool, num_pool=num_pool):
      box['history'], box['stats'] = record(state, data, box['history'], box['stats'], pool,
                                            num_pool, jax.random.PRNGKey(0))
      return box['history'], box['stats']

    fns[variant] = run
    assert set(box['stats']) == set(setup.recording.stat_fields)
  setup_s = time.perf_counter() - t0
  t = _common.interleaved(fns, reps)
  h, a = t['history'], t['all_stats']
  return {
      'case': name, 'spec': spec, 'reps': reps, 'setup_and_compile_s': setup_s,
      'history_s': h['median'], 'all_stats_s': a['median'],
      'ratio': a['median'] / h['median'], 'ratio_min': a['min'] / h['min'],
      'extra_ms_per_pass': 1e3 * (a['median'] - h['median']),
      'pool_images_per_s': spec['pool'] / h['median'],
      'runs_s': {'history': h['runs'], 'all_stats': a['runs']},
  }


def main(argv=None):
  p = _common.parser(__doc__)
  args = p.parse_args(argv)
  _common.quiet_logs()
  import jax  # pylint: disable=g-import-not-at-top
  t_start = time.perf_counter()
  rows = []
  for name, spec_name, changes, reps in (QUICK if args.quick else CASES):
    spec = {**_rounds.SPECS[spec_name], **changes}
    r = measure(name, spec, 3 if args.quick else reps)
    rows.append(r)
    print(f'  {name}: history {1e3 * r["history_s"]:.1f} ms, all statistics '
          f'{1e3 * r["all_stats_s"]:.1f} ms, ratio {r["ratio"]:.3f}', flush=True)
  worst = max(r['ratio'] for r in rows)
  result = {
      'benchmark': 'record_cost', 'quick': args.quick, 'machine': _common.machine_info(),
      'stats': list(ALL_STATS), 'cases': rows,
      'headline': {'record_cost_ratio': rows[0]['ratio'],
                   'record_cost_ratio_max': worst,
                   'record_cost_ratio_by_case': {r['case']: r['ratio'] for r in rows},
                   'goal': GOAL},
      'wall_s': time.perf_counter() - t_start,
  }
  path = _common.write_json(args.out, 'record_cost', args.quick, result)
  print(f'\nrecord pass on {jax.devices()[0].platform} ({os.cpu_count()} cores), 1 device: '
        f'history alone vs history + {" + ".join(ALL_STATS)} (goal <= {GOAL}x); {path}')
  print(_common.table(
      ['case', 'model', 'width', 'classes', 'pool', 'chunk', 'history ms', 'all stats ms',
       'ratio', 'ratio (min)', 'extra ms'],
      [[r['case'], r['spec']['model'], r['spec']['width'], r['spec']['num_classes'],
        r['spec']['pool'], r['spec']['eval_batch'], 1e3 * r['history_s'],
        1e3 * r['all_stats_s'], r['ratio'], r['ratio_min'], r['extra_ms_per_pass']]
       for r in rows]))
  return 0


if __name__ == '__main__':
  sys.exit(main())
