r"""One command for a GPU or TPU chip: throughput, MFU, one round of the paper's protocol, its cost.

  python benchmarks/accelerator_check.py             # one GPU / TPU chip, at most ~8 minutes
  python benchmarks/accelerator_check.py --quick     # tiny CPU version (seconds; CI smoke test)
  python benchmarks/accelerator_check.py --out DIR   # JSON: DIR/accelerator_check[_quick].json

Everything runs on one device (the first), on random CIFAR-shaped images (uint8 32x32x3, random
labels: speed does not depend on the pixels, and generating 50,000 synthetic images would take a
minute of the budget). It prints a table and writes JSON with:

1. **device**: ``device_kind``, platform, and the dense bfloat16 peak assumed for it
   (``PEAK_BF16_TFLOPS``, vendor figures; ``null`` for an unknown kind, or ``--peak-tflops``).
2. **throughput**: ResNet18 (width 64) in bfloat16 and float32 at batch 256 and 1024: train
   images/s of one epoch of the real trainer (``strategy='random'``: index gather, crop/flip,
   normalisation, masked forward/backward, SGD; on GPU/TPU one compiled call per epoch) and pool
   scoring images/s (eval-mode forward + softmax over the pool in chunks of the batch size);
   each with its **model FLOP utilisation** = images/s x FLOPs per image / peak. FLOPs per image
   are counted analytically (convolutions and the classifier, 2 FLOPs per multiply-add; BatchNorm,
   ReLU and the optimizer not counted): forward 1.11 GFLOP at width 64 on 32x32, training =
   3 x forward. XLA's own count (``cost_analysis`` of the lowered forward and gradient) is
   reported next to it. MFU of float32 is against the same bfloat16 peak.
3. **round**: ``configs/cifar10.py`` as it is (ResNet18 w64, batch 256, eval batch 1024, 5,000
   labeled, the whole 45,000-image pool recorded after every epoch), with ``model.dtype``
   bfloat16 and ``train.epochs`` = ``--epochs`` (3): one warm-up round (compiles), one timed
   round (``al_round``: train from scratch, record, test evaluation on 10,000 images, dispersion,
   selection of 2,500), and the seconds per epoch split into train and record (one epoch of the
   trainer without and with recording, interleaved).
4. **protocol projection**: the paper's protocol, 6 rounds x 100 epochs at 5,000, 7,500, ...,
   17,500 labels, from the measured round: ``ceil(labels / 256)`` optimizer steps at the measured
   time per step, plus the measured record time every epoch (jaxdisp scores the pool's full
   capacity, 45,056 images, every epoch of every round), plus the measured per-round rest (init,
   test evaluation, dispersion, selection). Compilation happens once per run and is reported
   apart.

Parts run in the order round, then throughput cases (bfloat16 first); once ``--budget-minutes``
(7.5) is used up, the remaining throughput cases are skipped and listed as such. The JSON is
rewritten after every part, so a run stopped from outside keeps what it measured. ``--quick``
uses the small CNN (width 4; XLA:CPU takes 10-30 s to compile each ResNet18 program) on 16x16
images, batches 16/32, a 128 + 512-image round of 2 epochs: every field, no meaningful number.
"""

from __future__ import annotations

import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # pylint: disable=g-import-not-at-top,wrong-import-position
import _rounds  # pylint: disable=g-import-not-at-top,wrong-import-position

# Dense bfloat16 TFLOP/s per device (one GPU, one TPU chip), vendor datasheets; matched as
# lower-case substrings of jax's ``device_kind``, first match wins.
PEAK_BF16_TFLOPS = (
    ('h100 pcie', 756.0), ('h100', 989.0), ('h200', 989.0), ('gh200', 989.0),
    ('a100', 312.0), ('l4', 121.0),
    ('tpu v6 lite', 918.0), ('tpu v6e', 918.0), ('tpu v5 lite', 197.0), ('tpu v5e', 197.0),
    ('tpu v5p', 459.0), ('tpu v5', 459.0), ('tpu v4', 275.0), ('tpu v3', 123.0),
)

SIZES = {
    'full': dict(model='resnet18', width=64, image_size=32, num_classes=10,
                 dtypes=('bfloat16', 'float32'), batches=(256, 1024), train_images=10240, pool_images=20480, reps=3,
                 num_train=50000, num_test=10000, initial=5000, budget=2500, batch=256,
                 eval_batch=1024, round_dtype='bfloat16', step_loop='auto'),
    # small_cnn: XLA:CPU compiles ResNet18 in ~10-30 s per program, far over a smoke test
    'quick': dict(model='small_cnn', width=4, image_size=16, num_classes=10,
                  dtypes=('bfloat16', 'float32'), batches=(16,), train_images=64, pool_images=64, reps=1,
                  num_train=640, num_test=128, initial=128, budget=64, batch=32,
                  eval_batch=128, round_dtype='float32',
                  # one compiled call per epoch, as on GPU/TPU: the smoke test runs their path
                  step_loop='device'),
}
PROTOCOL = dict(rounds=6, epochs=100, initial=5000, budget=2500, batch=256)

# ---- every call into jaxdisp internals goes through the functions below ---------------------


def base_config(overrides: dict):
  """``configs/cifar10.py`` (the paper's protocol) with dotted-key overrides."""
  from jaxdisp import cli  # pylint: disable=g-import-not-at-top
  return _common.set_keys(cli.load_config(os.path.join(_common.REPO, 'configs', 'cifar10.py')),
                          overrides)


def random_dataset(num_train: int, num_test: int, num_classes: int, image_size: int):
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jaxdisp import data  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  shape = (image_size, image_size, 3)
  return data.Dataset(
      name='random-cifar-shaped',
      train_images=rng.integers(0, 256, (num_train, *shape), np.uint8),
      train_labels=rng.integers(0, num_classes, num_train).astype(np.int32),
      test_images=rng.integers(0, 256, (num_test, *shape), np.uint8),
      test_labels=rng.integers(0, num_classes, num_test).astype(np.int32),
      class_names=tuple(f'class_{c}' for c in range(num_classes)),
      train_ids=tuple(f'train/{i}' for i in range(num_train)))


def make_experiment(cfg, dataset):
  """An experiment (data on one device, compiled functions) for ``cfg``."""
  from jaxdisp import parallel, rounds  # pylint: disable=g-import-not-at-top
  return rounds.Experiment.create(cfg, dataset, mesh=parallel.make_mesh(1))


def run_round(exp, state):
  """One timed round from ``state`` (``experiment.Runner`` without checkpoints or outputs);
  returns the new state (``seconds`` filled in)."""
  from jaxdisp import experiment  # pylint: disable=g-import-not-at-top
  return experiment.Runner(exp).round(state)


def trainer_functions(cfg, dataset, steps: int, chunks: int):
  """``(train_epoch, pool_pass)``: one epoch of ``steps`` optimizer steps of the real trainer
  (no recording), and one pool-scoring pass over ``chunks`` chunks; each returns something to
  block on. Weights are random (made on the host, no compiled init)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  n, b = dataset.num_train, cfg.train.batch_size
  eval_rows = chunks * cfg.train.eval_batch_size
  train_epoch, pool_pass, _ = _rounds.trainer_functions(
      cfg, dataset, np.arange(steps * b) % n, (np.arange(eval_rows) + 7) % n)
  return train_epoch, pool_pass


def xla_flops_per_image(cfg, num_classes: int, image_size: int) -> dict:
  """XLA's FLOP count (``Lowered.cost_analysis``, no compilation) of the forward pass and of the
  loss gradient, per image, at batch 8."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from jaxdisp import models  # pylint: disable=g-import-not-at-top
  model = models.create_model(cfg.model, num_classes)
  x = jax.ShapeDtypeStruct((8, image_size, image_size, 3), jnp.float32)
  y = jax.ShapeDtypeStruct((8,), jnp.int32)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(x.shape),
                                                train=False))

  def loss(params, batch_stats, x, y):
    logits, _ = model.apply({'params': params, 'batch_stats': batch_stats}, x, train=True,
                            mutable=['batch_stats'])
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  def flops(lowered):
    cost = lowered.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost['flops']) / 8 if cost and 'flops' in cost else None

  try:
    fwd = flops(jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(variables, x))
    grad = flops(jax.jit(jax.grad(loss)).lower(variables['params'], variables['batch_stats'],
                                               x, y))
  except Exception as e:  # pylint: disable=broad-except  (cost analysis is best effort)
    return {'forward': None, 'train': None, 'error': f'{type(e).__name__}: {e}'[:200]}
  return {'forward': fwd, 'train': grad}


def compile_counter():
  """A function returning the number of XLA compilations so far."""
  from jaxdisp import compile_counter as counter  # pylint: disable=g-import-not-at-top
  counter.enable()
  return lambda: sum(counter.compile_counts().values())


# ---- arithmetic -----------------------------------------------------------------------------


def resnet18_forward_flops(width: int, image_size: int, num_classes: int) -> float:
  """2 x multiply-adds of the convolutions and the classifier of jaxdisp's CIFAR ResNet18."""
  macs = image_size**2 * 9 * 3 * width  # stem
  cin, hw = width, image_size
  for stage in range(4):
    cout = width * 2**stage
    for block in range(2):
      stride = 2 if stage > 0 and block == 0 else 1
      hw_out = hw // stride
      macs += hw_out**2 * 9 * (cin * cout + cout * cout)
      if stride != 1 or cin != cout:
        macs += hw_out**2 * cin * cout  # 1x1 projection shortcut
      cin, hw = cout, hw_out
  macs += cin * num_classes
  return 2.0 * macs


def small_cnn_forward_flops(width: int, image_size: int, num_classes: int) -> float:
  """2 x multiply-adds of jaxdisp's small CNN (three 3x3 convs, 2x2 pooling after two)."""
  macs, cin = 0, 3
  for i in range(3):
    cout = width * 2**i
    macs += (image_size // 2**i)**2 * 9 * cin * cout
    cin = cout
  return 2.0 * (macs + cin * num_classes)


def forward_flops(model: str, width: int, image_size: int, num_classes: int) -> float:
  fn = {'resnet18': resnet18_forward_flops, 'small_cnn': small_cnn_forward_flops}[model]
  return fn(width, image_size, num_classes)


def peak_tflops(device_kind: str):
  kind = device_kind.lower()
  for key, value in PEAK_BF16_TFLOPS:
    if key in kind:
      return value
  return None


def mfu(images_per_s, flops_per_image, peak):
  if not images_per_s or not peak:
    return None
  return images_per_s * flops_per_image / (peak * 1e12)


def project_protocol(step_s: float, record_s: float, rest_s: float) -> dict:
  """Seconds of the paper's protocol from one round's measured parts."""
  p = PROTOCOL
  rounds = []
  for r in range(p['rounds']):
    labeled = p['initial'] + r * p['budget']
    steps = math.ceil(labeled / p['batch'])
    train_s = p['epochs'] * steps * step_s
    rec_s = p['epochs'] * record_s
    rounds.append({'round': r, 'labeled': labeled, 'steps_per_epoch': steps, 'train_s': train_s,
                   'record_s': rec_s, 'rest_s': rest_s, 'total_s': train_s + rec_s + rest_s})
  total = sum(r['total_s'] for r in rounds)
  return {'rounds': rounds, 'epochs_per_round': p['epochs'],
          'labeled_sizes': [r['labeled'] for r in rounds],
          'train_s': sum(r['train_s'] for r in rounds),
          'record_s': sum(r['record_s'] for r in rounds),
          'rest_s': rest_s * p['rounds'], 'total_s': total, 'total_hours': total / 3600,
          'excludes': 'compilation (once per run, see round.first_round_s), checkpoint writes, '
                      'data loading'}


# ---- the parts ------------------------------------------------------------------------------


def measure_throughput(sz: dict, dtype: str, batch: int, dataset, flops: dict, peak) -> dict:
  steps = max(1, sz['train_images'] // batch)
  chunks = max(1, sz['pool_images'] // batch)
  cfg = base_config({
      'strategy': 'random', 'num_devices': 1, 'model.name': sz['model'],
      'model.width': sz['width'], 'model.dtype': dtype, 'train.step_loop': sz['step_loop'],
      'train.batch_size': batch, 'train.eval_batch_size': batch, 'train.epochs': 1000,
      'log.pool_diagnostics': False})
  t0 = time.perf_counter()
  train_epoch, pool_pass = trainer_functions(cfg, dataset, steps, chunks)
  _common.block(train_epoch())  # compiles
  _common.block(pool_pass())
  compile_s = time.perf_counter() - t0
  t = _common.interleaved({'train': train_epoch, 'pool': pool_pass}, sz['reps'], warmup=0)
  train_ips = steps * batch / t['train']['median']
  pool_ips = chunks * batch / t['pool']['median']
  return {'dtype': dtype, 'batch': batch, 'status': 'measured', 'steps': steps,
          'pool_chunks': chunks, 'reps': sz['reps'],
          'train_images_per_s': train_ips, 'pool_images_per_s': pool_ips,
          'train_mfu': mfu(train_ips, flops['train'], peak),
          'pool_mfu': mfu(pool_ips, flops['forward'], peak),
          'setup_and_compile_s': compile_s,
          'seconds': {k: v['runs'] for k, v in t.items()}}


def measure_paper_round(sz: dict, epochs: int, dataset, flops: dict, peak) -> dict:
  import numpy as np  # pylint: disable=g-import-not-at-top
  rounds = PROTOCOL['rounds'] - 1
  overrides = {
      'num_devices': 1, 'dataset.source': 'synthetic', 'dataset.name': dataset.name,
      'dataset.num_train': sz['num_train'], 'dataset.num_test': sz['num_test'],
      'dataset.image_size': sz['image_size'], 'dataset.num_classes': sz['num_classes'],
      'model.name': sz['model'], 'model.width': sz['width'], 'model.dtype': sz['round_dtype'],
      'train.epochs': epochs, 'train.step_loop': sz['step_loop'],
      'train.batch_size': sz['batch'], 'train.eval_batch_size': sz['eval_batch'],
      'al.initial_size': sz['initial'], 'al.budget': sz['budget'], 'al.rounds': rounds,
      'log.pool_diagnostics': False}
  cfg = base_config(overrides)
  compiles = compile_counter()
  t0 = time.perf_counter()
  exp = make_experiment(cfg, dataset)
  setup_s = time.perf_counter() - t0
  state0 = exp.initial_state()
  labeled = int((state0.labeled_round >= 0).sum())
  pool = sz['num_train'] - labeled
  t0 = time.perf_counter()
  warm = run_round(exp, state0)
  first_s = time.perf_counter() - t0
  before = compiles()
  t0 = time.perf_counter()
  timed = run_round(exp, state0)
  wall = time.perf_counter() - t0
  compiled = compiles() - before
  same = bool(np.array_equal(warm.selected(0), timed.selected(0)))
  # Seconds per epoch: the trainer without and with recording (ids: the first `labeled` train,
  # the next `pool` are recorded, as in the round: same sizes, same capacities).
  other = make_experiment(_common.set_keys(base_config(overrides), {'strategy': 'random'}),
                          dataset)
  ep = _rounds.measure_epochs({'labeled': labeled, 'pool': pool}, exp, reps=sz['reps'],
                              train_only_exp=other)
  train_s, record_s = ep['train_only'], ep['record']
  rest_s = max(wall - epochs * ep['train_and_record'], 0.0)
  steps = math.ceil(labeled / sz['batch'])
  pool_capacity = int(exp.pool_capacity)
  return {
      'config': 'configs/cifar10.py', 'overrides': overrides, 'dtype': sz['round_dtype'],
      'epochs': epochs, 'labeled': labeled, 'pool': pool, 'pool_capacity': pool_capacity,
      'test_images': sz['num_test'], 'setup_s': setup_s, 'first_round_s': first_s,
      'round_wall_s': wall, 'round_seconds': dict(zip(('train', 'score', 'select'),
                                                      (float(x) for x in timed.seconds[0]))),
      'compilations_in_timed_round': compiled, 'same_selection_as_warmup_round': same,
      'seconds_per_epoch': {'train': train_s, 'record': record_s,
                            'total': ep['train_and_record']},
      'epoch_runs_s': ep['runs'], 'rest_per_round_s': rest_s,
      'train_step_s': train_s / steps, 'steps_per_epoch': steps,
      'train_images_per_s': labeled / train_s,
      'record_images_per_s': pool_capacity / record_s if record_s > 0 else None,
      'train_mfu': mfu(labeled / train_s, flops['train'], peak),
      'record_mfu': mfu(pool_capacity / record_s if record_s > 0 else None, flops['forward'],
                        peak),
  }


def main(argv=None):
  p = _common.parser(__doc__)
  p.add_argument('--epochs', type=int, default=0,
                 help='epochs of the measured round (default 3; 2 with --quick)')
  p.add_argument('--budget-minutes', type=float, default=7.5,
                 help='skip the remaining throughput cases after this long (default 7.5)')
  p.add_argument('--peak-tflops', type=float, default=None,
                 help='dense bf16 peak of the device, TFLOP/s (default: PEAK_BF16_TFLOPS)')
  p.add_argument('--skip-round', action='store_true', help='throughput cases only')
  args = p.parse_args(argv)
  _common.quiet_logs()
  t_start = time.perf_counter()
  import jax  # pylint: disable=g-import-not-at-top
  sz = SIZES['quick' if args.quick else 'full']
  epochs = args.epochs or (2 if args.quick else 3)
  dev = jax.devices()[0]
  peak = args.peak_tflops or peak_tflops(dev.device_kind)
  forward = forward_flops(sz['model'], sz['width'], sz['image_size'], sz['num_classes'])
  flops = {'forward': forward, 'train': 3 * forward}
  result = {
      'benchmark': 'accelerator_check', 'quick': args.quick, 'machine': _common.machine_info(),
      'device': {'kind': dev.device_kind, 'platform': dev.platform,
                 'devices_available': jax.device_count(), 'devices_used': 1,
                 'peak_bf16_tflops': peak,
                 'peak_source': ('--peak-tflops' if args.peak_tflops else
                                 'PEAK_BF16_TFLOPS (vendor dense bf16)' if peak else
                                 'unknown device kind')},
      'model': {'name': sz['model'], 'width': sz['width'], 'image_size': sz['image_size'],
                'num_classes': sz['num_classes'],
                'forward_flops_per_image': forward, 'train_flops_per_image': 3 * forward,
                'flops_method': 'analytic: 2 x multiply-adds of convolutions + classifier; '
                                'train = 3 x forward',
                'xla_flops_per_image': xla_flops_per_image(
                    base_config({'model.name': sz['model'], 'model.width': sz['width']}),
                    sz['num_classes'],
                    sz['image_size'])},
      'throughput': [], 'round': None, 'protocol_projection': None, 'skipped': [],
      'budget_s': args.budget_minutes * 60, 'headline': {}, 'wall_s': None,
  }
  t0 = time.perf_counter()
  dataset = random_dataset(sz['num_train'], sz['num_test'], sz['num_classes'], sz['image_size'])
  result['dataset_s'] = time.perf_counter() - t0

  def save():
    result['wall_s'] = time.perf_counter() - t_start
    result['headline'] = headline(result)
    return _common.write_json(args.out, 'accelerator_check', args.quick, result)

  if not args.skip_round:
    print(f'round: configs/cifar10.py, {epochs} epochs ...', flush=True)
    result['round'] = measure_paper_round(sz, epochs, dataset, flops, peak)
    r = result['round']
    result['protocol_projection'] = project_protocol(r['train_step_s'],
                                                     r['seconds_per_epoch']['record'],
                                                     r['rest_per_round_s'])
    print(f'  {r["seconds_per_epoch"]["train"]:.3f} s train + '
          f'{r["seconds_per_epoch"]["record"]:.3f} s record per epoch; protocol '
          f'{result["protocol_projection"]["total_hours"]:.2f} h', flush=True)
    save()
  for dtype in sz['dtypes']:
    for batch in sz['batches']:
      if time.perf_counter() - t_start > result['budget_s']:
        result['throughput'].append({'dtype': dtype, 'batch': batch, 'status': 'skipped: time '
                                     'budget used up'})
        result['skipped'].append(f'throughput {dtype} batch {batch}')
        continue
      c = measure_throughput(sz, dtype, batch, dataset, flops, peak)
      result['throughput'].append(c)
      print(f'  {dtype} batch {batch}: train {c["train_images_per_s"]:.0f} img/s, pool '
            f'{c["pool_images_per_s"]:.0f} img/s (setup+compile {c["setup_and_compile_s"]:.0f} s)',
            flush=True)
      save()
  path = save()
  print_report(result, path)
  return result


def headline(result: dict) -> dict:
  cases = {f'{c["dtype"]}_{c["batch"]}': c for c in result['throughput']
           if c.get('status') == 'measured'}
  r, proj = result['round'] or {}, result['protocol_projection'] or {}
  return {
      'device_kind': result['device']['kind'],
      'peak_bf16_tflops': result['device']['peak_bf16_tflops'],
      'train_images_per_s': {k: c['train_images_per_s'] for k, c in cases.items()},
      'pool_images_per_s': {k: c['pool_images_per_s'] for k, c in cases.items()},
      'train_mfu': {k: c['train_mfu'] for k, c in cases.items()},
      'pool_mfu': {k: c['pool_mfu'] for k, c in cases.items()},
      'forward_flops_per_image': result['model']['forward_flops_per_image'],
      'round_seconds_per_epoch_train': (r.get('seconds_per_epoch') or {}).get('train'),
      'round_seconds_per_epoch_record': (r.get('seconds_per_epoch') or {}).get('record'),
      'protocol_hours': proj.get('total_hours'),
  }


def _pct(x):
  return None if x is None else f'{100 * x:.1f}%'


def print_report(result: dict, path: str) -> None:
  d, m = result['device'], result['model']
  peak = f'{d["peak_bf16_tflops"]:g} TFLOP/s' if d['peak_bf16_tflops'] else 'unknown'
  print(f'\n{d["kind"]} ({d["platform"]}, 1 of {d["devices_available"]} devices), peak bf16 '
        f'{peak}; {m["name"]} w{m["width"]} on {m["image_size"]}x{m["image_size"]}x3: '
        f'{m["forward_flops_per_image"] / 1e9:.3g} GFLOP forward, '
        f'{m["train_flops_per_image"] / 1e9:.3g} train per image (XLA: '
        f'{_gflop(m["xla_flops_per_image"].get("forward"))} / '
        f'{_gflop(m["xla_flops_per_image"].get("train"))}); {path}')
  rows = [[c['dtype'], c['batch'], c.get('train_images_per_s'), _pct(c.get('train_mfu')),
           c.get('pool_images_per_s'), _pct(c.get('pool_mfu')),
           c.get('setup_and_compile_s', c.get('status'))] for c in result['throughput']]
  if rows:
    print(_common.table(['dtype', 'batch', 'train img/s', 'MFU', 'pool img/s', 'MFU',
                         'compile s'], rows))
  r = result['round']
  if r:
    e = r['seconds_per_epoch']
    print(f'\nround of configs/cifar10.py ({r["dtype"]}, {r["labeled"]} labeled, pool '
          f'{r["pool"]} (capacity {r["pool_capacity"]}), {r["epochs"]} epochs): '
          f'{r["round_wall_s"]:.1f} s after a {r["first_round_s"]:.1f} s first round '
          f'(compiles); {r["compilations_in_timed_round"]} compilations in the timed round')
    print(_common.table(
        ['per epoch', 'seconds', 'images/s', 'MFU'],
        [['train', e['train'], r['train_images_per_s'], _pct(r['train_mfu'])],
         ['record (whole pool)', e['record'], r['record_images_per_s'], _pct(r['record_mfu'])],
         ['train + record', e['total'], None, None],
         ['per round: init, test, dispersion, selection', r['rest_per_round_s'], None, None]]))
    proj = result['protocol_projection']
    print(f'\npaper protocol projected on this device ({len(proj["rounds"])} rounds x '
          f'{proj["epochs_per_round"]} epochs, labels {proj["labeled_sizes"][0]}..'
          f'{proj["labeled_sizes"][-1]}): {proj["total_s"]:.0f} s = {proj["total_hours"]:.2f} h '
          f'(train {proj["train_s"]:.0f} s, record {proj["record_s"]:.0f} s, rest '
          f'{proj["rest_s"]:.0f} s; compilation excluded)')
  if result['skipped']:
    print('skipped (time budget): ' + ', '.join(result['skipped']))


def _gflop(x):
  return '-' if x is None else f'{x / 1e9:.3g}'


if __name__ == '__main__':
  main()
