r"""Train and pool-scoring throughput vs a model-only ceiling, and the efficiency of a whole round.

  python benchmarks/throughput.py            # CPU-sized grid + two whole rounds (~6 min on 2 cores)
  python benchmarks/throughput.py --quick    # small_cnn + resnet18 w16, batch 128, tiny counts
  python benchmarks/throughput.py --full-grid   # every model x batch 128..1024 (for a GPU/TPU)

Part 1, throughput grid: for each model (ResNet18 at widths 16/32/64, the small CNN at width 16)
and batch size, on 32x32x3 synthetic images, one device:

* train: one epoch of the real trainer (``strategy='random'``, so nothing is recorded) over
  ``steps`` full batches: gather by index + crop/flip augmentation + normalisation + masked
  forward/backward + SGD, dispatched as on this platform (``train.step_loop='auto'``: from Python
  on CPU, one compiled epoch on TPU/GPU). images/s = steps * batch / epoch time.
* pool scoring: ``strategies.pool_outputs`` (eval-mode forward, chunked by ``eval_batch_size`` =
  the batch size, gathered from the on-device dataset) over ``chunks`` chunks.
* ceiling: the same model alone, jitted, on the same shapes: forward+backward+the same optimizer
  update on a ready float32 batch, and a bare eval-mode forward (no gather, no augmentation, no
  masking, no metrics, no scan). efficiency = ceiling time / actual time.

Part 2, a whole active-learning round (``jaxdisp.rounds.al_round``: train from scratch with the
pool scored after every epoch, test evaluation, label dispersion, selection) on synthetic data,
timed after a warm-up round, against the model-only time of the same work:
``epochs * steps * ceiling step + epochs * pool / eval_batch * ceiling forward + test forward``.
``round efficiency = that / round wall time``. The round's time is also split using one epoch
of the trainer without and with recording (the difference is the in-epoch record path).

Timings are medians of interleaved repetitions after a warm-up (compilation excluded). Writes
``<out>/throughput[_quick].json``.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # pylint: disable=g-import-not-at-top,wrong-import-position
import _rounds  # pylint: disable=g-import-not-at-top,wrong-import-position

# (model, width, batch sizes, steps per timed epoch, pool chunks per timed pass, repetitions)
GRID = [
    ('small_cnn', 16, (128, 256, 512, 1024), 4, 4, 3),
    ('resnet18', 16, (128, 512), 2, 2, 2),
    ('resnet18', 32, (128,), 2, 2, 2),
    ('resnet18', 64, (128,), 1, 1, 2),
]
FULL_GRID = [(m, w, (128, 256, 512, 1024), 4, 4, 3)
             for m, w in (('small_cnn', 16), ('resnet18', 16), ('resnet18', 32), ('resnet18', 64))]
QUICK_GRID = [('small_cnn', 16, (128,), 2, 1, 1), ('resnet18', 16, (128,), 1, 1, 1)]
IMAGE_SIZE = 32


def measure_case(ds, model_name: str, width: int, batch: int, steps: int, chunks: int,
                 reps: int) -> dict:
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jaxdisp import parallel, train  # pylint: disable=g-import-not-at-top
  spec = dict(model=model_name, width=width, image_size=IMAGE_SIZE, batch=batch,
              eval_batch=batch, labeled=steps * batch, pool=chunks * batch, test=batch,
              epochs=1000, num_classes=ds.num_classes)
  cfg = _rounds.config(spec, strategy='random')
  mesh = parallel.make_mesh(1)
  t0 = time.perf_counter()
  n = ds.num_train
  train_epoch, pool_pass, box = _rounds.trainer_functions(
      cfg, ds, np.arange(steps * batch) % n, (np.arange(chunks * batch) + 7) % n)

  ceil = _rounds.ceiling_fns(spec, _rounds.variables_of(box['state']), steps, chunks)
  _common.block(ceil['train']())  # compile outside the timed loop
  _common.block(ceil['forward']())
  _common.block(train_epoch())
  _common.block(pool_pass())
  compile_s = time.perf_counter() - t0
  t = _common.interleaved({'train': train_epoch, 'train_ceiling': ceil['train'],
                           'pool': pool_pass, 'pool_ceiling': ceil['forward']}, reps, warmup=0)
  med = {k: v['median'] for k, v in t.items()}
  return {
      'model': model_name, 'width': width, 'batch': batch, 'steps': steps, 'pool_chunks': chunks,
      'step_loop': train.step_loop(cfg, mesh), 'reps': reps,
      'train_images_per_s': steps * batch / med['train'],
      'train_ceiling_images_per_s': steps * batch / med['train_ceiling'],
      'train_efficiency': med['train_ceiling'] / med['train'],
      'pool_images_per_s': chunks * batch / med['pool'],
      'pool_ceiling_images_per_s': chunks * batch / med['pool_ceiling'],
      'pool_efficiency': med['pool_ceiling'] / med['pool'],
      'seconds': {k: v['runs'] for k, v in t.items()}, 'setup_and_compile_s': compile_s,
  }


def measure_round_spec(name: str, quick: bool) -> dict:
  spec = _rounds.SPECS[name]
  reps = 1 if quick else 3
  import jax  # pylint: disable=g-import-not-at-top
  exp = _rounds.experiment(spec)
  variables = _rounds.variables_of(exp.steps.init(jax.random.PRNGKey(0)))
  # The ceiling is measured before and after the round (median over both), so that a change in
  # the machine's background load during the round biases neither side.
  before = _rounds.measure_ceilings(spec, variables, reps=reps)
  rnd = _rounds.measure_round(spec, exp, reps=1 if quick else 2)
  after = before if quick else _rounds.measure_ceilings(spec, variables, reps=reps)
  ceil = _rounds.merge_ceilings(before, after)
  epochs = _rounds.measure_epochs(spec, exp, reps=reps)
  ceiling = _rounds.ceiling_seconds(spec, ceil)
  e = spec['epochs']
  actual = {'train': e * epochs['train_only'], 'pool_scoring': e * epochs['record'],
            'other': max(rnd['wall_s'] - e * epochs['train_and_record'], 0.0)}
  actual['total'] = rnd['wall_s']
  return {
      'spec': spec, 'round': rnd, 'epochs': epochs, 'ceiling': ceil,
      'ceiling_seconds': ceiling, 'actual_seconds': actual,
      'round_efficiency': ceiling['total'] / rnd['wall_s'],
      'train_efficiency': ceiling['train'] / actual['train'],
      'pool_scoring_efficiency': (ceiling['pool_scoring'] / actual['pool_scoring']
                                  if actual['pool_scoring'] > 0 else None),
      'record_images_per_s': (spec['pool'] / epochs['record'] if epochs['record'] > 0 else None),
  }


def main(argv=None):
  p = _common.parser(__doc__)
  p.add_argument('--full-grid', action='store_true',
                 help='every model x batch 128/256/512/1024 (slow on CPU)')
  p.add_argument('--skip-grid', action='store_true', help='only the whole-round part')
  args = p.parse_args(argv)
  _common.quiet_logs()
  import jax  # pylint: disable=g-import-not-at-top
  from jaxdisp import data  # pylint: disable=g-import-not-at-top

  t_start = time.perf_counter()
  # The whole-round part first: its programs are the ones torch_reference.py reuses (a
  # persistent compilation cache, if one is configured, then serves them).
  rounds = {}
  for name in (['quick'] if args.quick else ['small_cnn16', 'resnet18_16']):
    rounds[name] = measure_round_spec(name, args.quick)
    print(f'  round {name}: efficiency {rounds[name]["round_efficiency"]:.2f}', flush=True)

  grid = QUICK_GRID if args.quick else FULL_GRID if args.full_grid else GRID
  cases = []
  if not args.skip_grid:
    need = max(max(b) * max(s, c) for _, _, b, s, c, _ in grid)
    ds = data.synthetic(need, 64, 10, IMAGE_SIZE, 0)
    for model_name, width, batches, steps, chunks, reps in grid:
      for batch in batches:
        r = measure_case(ds, model_name, width, batch, steps, chunks, reps)
        cases.append(r)
        print(f'  {model_name} w{width} batch {batch}: train {r["train_images_per_s"]:.0f} img/s '
              f'(eff {r["train_efficiency"]:.2f}), pool {r["pool_images_per_s"]:.0f} img/s '
              f'(eff {r["pool_efficiency"]:.2f})', flush=True)

  head = rounds['quick' if args.quick else 'small_cnn16']
  result = {
      'benchmark': 'throughput', 'quick': args.quick, 'machine': _common.machine_info(),
      'image_size': IMAGE_SIZE, 'cases': cases, 'rounds': rounds,
      'headline': {
          'round_efficiency': head['round_efficiency'],
          'round_efficiency_by_spec': {k: v['round_efficiency'] for k, v in rounds.items()},
          'pool_scoring_efficiency': head['pool_scoring_efficiency'],
          'train_efficiency': head['train_efficiency'],
      },
      'wall_s': time.perf_counter() - t_start,
  }
  path = _common.write_json(args.out, 'throughput', args.quick, result)

  print(f'\nthroughput on {jax.devices()[0].platform} ({os.cpu_count()} cores), '
        f'{IMAGE_SIZE}x{IMAGE_SIZE}x3, 1 device; {path}')
  if cases:
    print(_common.table(
        ['model', 'width', 'batch', 'train img/s', 'ceiling', 'eff', 'pool img/s', 'ceiling',
         'eff'],
        [[c['model'], c['width'], c['batch'], c['train_images_per_s'],
          c['train_ceiling_images_per_s'], c['train_efficiency'], c['pool_images_per_s'],
          c['pool_ceiling_images_per_s'], c['pool_efficiency']] for c in cases]))
  for name, r in rounds.items():
    s = r['spec']
    print(f'\nround {name}: {s["model"]} w{s["width"]}, {s["labeled"]} labeled (batch '
          f'{s["batch"]}), pool {s["pool"]} + test {s["test"]} (eval batch {s["eval_batch"]}), '
          f'{s["epochs"]} epochs; {r["round"]["compilations_in_timed_rounds"]:g} compilation(s) '
          'per timed round'
          f" {r['round']['compiled_in_timed_rounds'] or ''}")
    c, a = r['ceiling_seconds'], r['actual_seconds']
    print(_common.table(
        ['phase', 'model-only s', 'actual s', 'efficiency'],
        [['train', c['train'], a['train'], c['train'] / a['train']],
         ['pool scoring', c['pool_scoring'], a['pool_scoring'],
          r['pool_scoring_efficiency']],
         ['test eval, dispersion, selection, other', c['test_eval'], a['other'], None],
         ['whole round', c['total'], a['total'], r['round_efficiency']]]))
  return result


if __name__ == '__main__':
  main()
