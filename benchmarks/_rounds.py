"""One active-learning round on synthetic data, measured three ways (shared by the benchmarks).

* :func:`measure_round`: wall time of ``jaxdisp.rounds.al_round`` (train from scratch with the
  pool scored after every epoch, test evaluation, dispersion, selection) after a warm-up round,
  plus the number of XLA compilations during the timed rounds (should be 0).
* :func:`measure_epochs`: one training epoch of the real trainer without recording
  (``strategy='random'``) and with recording (``strategy='dispersion'``), interleaved; their
  difference is the in-epoch pool-scoring cost (the record path, inside the compiled epoch end).
* :func:`measure_ceilings`: the model alone, jitted, on the same shapes: one forward+backward+
  optimizer update on a ready float32 batch (no gather, augmentation, masking or metrics), and
  one eval-mode forward of an ``eval_batch`` chunk.

``ceiling_seconds`` turns the ceilings into the model-only time of a whole round:
``epochs * steps * step + epochs * pool / eval_batch * forward + test / eval_batch * forward``.
"""

from __future__ import annotations

import functools

import _common

# Sizes of the rounds measured. ``labeled`` is a multiple of ``batch`` and ``pool``/``test`` are
# multiples of ``eval_batch``, so neither the ceiling nor the trainer has a partial batch.
SPECS = {
    # demo-like: small CNN width 16 on 32x32, pool scoring about as costly as training
    'small_cnn16': dict(model='small_cnn', width=16, image_size=32, batch=128, eval_batch=1024,
                        labeled=1024, pool=4096, test=1024, epochs=4, num_classes=10),
    # the paper's network at a CPU-sized width
    'resnet18_16': dict(model='resnet18', width=16, image_size=32, batch=128, eval_batch=512,
                        labeled=512, pool=2048, test=512, epochs=3, num_classes=10),
    # --quick: seconds
    'quick': dict(model='small_cnn', width=8, image_size=16, batch=64, eval_batch=512,
                  labeled=256, pool=1024, test=512, epochs=3, num_classes=10),
}


def config(spec: dict, strategy: str = 'dispersion'):
  from jaxdisp import config_lib  # pylint: disable=g-import-not-at-top
  cfg = config_lib.base_config()
  return _common.set_keys(cfg, {
      'strategy': strategy, 'num_devices': 1,
      'dataset.source': 'synthetic', 'dataset.name': 'synthetic',
      'dataset.num_train': spec['labeled'] + spec['pool'], 'dataset.num_test': spec['test'],
      'dataset.num_classes': spec['num_classes'], 'dataset.image_size': spec['image_size'],
      'model.name': spec['model'], 'model.width': spec['width'],
      'train.epochs': spec['epochs'], 'train.batch_size': spec['batch'],
      'train.eval_batch_size': spec['eval_batch'], 'train.learning_rate': 0.05,
      'al.initial_size': spec['labeled'], 'al.budget': spec['pool'] // 10, 'al.rounds': 1,
      'log.pool_diagnostics': False,
  })


@functools.lru_cache(maxsize=4)
def dataset(spec_items: tuple):
  from jaxdisp import data  # pylint: disable=g-import-not-at-top
  spec = dict(spec_items)
  return data.synthetic(spec['labeled'] + spec['pool'], spec['test'], spec['num_classes'],
                        spec['image_size'], 0)


def experiment(spec: dict, strategy: str = 'dispersion'):
  from jaxdisp import parallel, rounds  # pylint: disable=g-import-not-at-top
  cfg = config(spec, strategy)
  return rounds.Experiment.create(cfg, dataset(tuple(sorted(spec.items()))),
                                   mesh=parallel.make_mesh(1))


def measure_round(spec: dict, exp, reps: int = 2) -> dict:
  """Wall time of one ``al_round`` (round 0, dispersion) after a warm-up round."""
  import time  # pylint: disable=g-import-not-at-top
  from jaxdisp import compile_counter, experiment  # pylint: disable=g-import-not-at-top
  compile_counter.enable()
  state0 = exp.initial_state()
  runner = experiment.Runner(exp)  # a timed round, no checkpoints or outputs
  t0 = time.perf_counter()
  warm = runner.round(state0)  # compiles everything a round uses
  first = time.perf_counter() - t0
  before = compile_counter.compile_counts()
  walls, parts = [], []
  for _ in range(reps):
    t0 = time.perf_counter()
    s = runner.round(state0)
    walls.append(time.perf_counter() - t0)
    parts.append([float(x) for x in s.seconds[0]])
    assert (s.selected(0) == warm.selected(0)).all()  # al_round is a pure function of its input
  after = compile_counter.compile_counts()
  compiled = {k: n - before.get(k, 0) for k, n in after.items() if n != before.get(k, 0)}
  return {'wall_s': _common.median(walls), 'wall_runs_s': walls, 'first_round_s': first,
          'seconds': dict(zip(('train', 'score', 'select'), parts[walls.index(min(walls))])),
          'compilations_in_timed_rounds': sum(compiled.values()) / reps,
          'compiled_in_timed_rounds': compiled,
          'test_accuracy': float(warm.test_accuracy[0]),
          'selected_first': [int(i) for i in warm.selected(0)[:5]]}


def measure_epochs(spec: dict, exp, reps: int = 3, train_only_exp=None) -> dict:
  """Per-epoch time of the real trainer without and with recording the pool's predictions.

  ``exp`` is the (dispersion) experiment; a second trainer with ``strategy='random'`` (no
  recording; ``train_only_exp``, else built from ``spec``) starts from the same initial state.
  Only ``spec['labeled']`` and ``spec['pool']`` are read: the first ``labeled`` dataset ids are
  trained on and the next ``pool`` ones recorded.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jaxdisp import train  # pylint: disable=g-import-not-at-top
  fns = {}
  init = exp.steps.init(jax.random.PRNGKey(0))
  other = train_only_exp if train_only_exp is not None else experiment(spec, 'random')
  for name, e in (('train_only', other), ('train_and_record', exp)):
    steps = e.steps
    labeled, nl = train.index_buffer(np.arange(spec['labeled']), e.labeled_capacity, e.mesh)
    pool, npool = train.index_buffer(
        np.arange(spec['labeled'], spec['labeled'] + spec['pool']), e.pool_capacity, e.mesh)
    box = {'state': jax.tree.map(jax.numpy.copy, init),
           'history': steps.empty_history(e.pool_capacity),
           'stats': steps.empty_stats(e.pool_capacity)}

    def epoch(steps=steps, e=e, box=box, labeled=labeled, nl=nl, pool=pool, npool=npool):
      # Epochs past ``train.epochs`` cost the same (the row index is clamped), so no re-init.
      box['state'], box['history'], box['stats'], metrics = steps.train_epoch(
          box['state'], box['history'], box['stats'], e.data, labeled, nl, pool, npool,
          jax.random.PRNGKey(1))
      return box['state'], box['history'], metrics

    fns[name] = epoch
  t = _common.interleaved(fns, reps)
  out = {name: v['median'] for name, v in t.items()}
  out['record'] = max(out['train_and_record'] - out['train_only'], 0.0)
  out['runs'] = {name: v['runs'] for name, v in t.items()}
  return out


def measure_ceilings(spec: dict, variables, reps: int = 3, steps: int | None = None,
                     chunks: int | None = None) -> dict:
  """Seconds per optimizer step (``batch``) and per forward chunk (``eval_batch``), model only."""
  fns = ceiling_fns(spec, variables, steps or spec['labeled'] // spec['batch'],
                    chunks or spec['pool'] // spec['eval_batch'])
  t = _common.interleaved({'train': fns['train'], 'forward': fns['forward']}, reps)
  return {'step_s': t['train']['median'] / fns['steps'],
          'forward_chunk_s': t['forward']['median'] / fns['chunks'],
          'steps': fns['steps'], 'chunks': fns['chunks'],
          'runs': {k: v['runs'] for k, v in t.items()}}


def merge_ceilings(a: dict, b: dict) -> dict:
  """The median over the runs of two :func:`measure_ceilings` results (same spec)."""
  if a is b:
    return a
  runs = {k: a['runs'][k] + b['runs'][k] for k in a['runs']}
  return {'step_s': _common.median(runs['train']) / a['steps'],
          'forward_chunk_s': _common.median(runs['forward']) / a['chunks'],
          'steps': a['steps'], 'chunks': a['chunks'], 'runs': runs}


def random_train_state(setup, seed: int = 0):
  """A ``train.TrainState`` with He-normal weights made on the host (no compiled ``init``).

  Throughput does not depend on the weights' values, and ``jax.jit(model.init)`` takes longer to
  compile than a training step for ResNet18 on XLA:CPU (about 6 s here), so the grid skips it.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jaxdisp import parallel, train  # pylint: disable=g-import-not-at-top
  shapes = jax.eval_shape(functools.partial(setup.model.init, train=False), jax.random.key(0),
                          jnp.zeros((1, *setup.image_shape), jnp.float32))
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = jax.tree_util.keystr(path)
    if 'var' in name or 'scale' in name:
      return np.ones(leaf.shape, leaf.dtype)
    if 'mean' in name or 'bias' in name:
      return np.zeros(leaf.shape, leaf.dtype)
    fan = int(np.prod(leaf.shape[:-1])) or 1
    return (rng.standard_normal(leaf.shape) * np.sqrt(2.0 / fan)).astype(leaf.dtype)

  variables = jax.tree_util.tree_map_with_path(fill, shapes)
  params = variables['params']
  state = train.TrainState(epoch=np.int32(0), params=params,
                           batch_stats=variables.get('batch_stats', {}),
                           opt_state=setup.tx.init(params))
  return parallel.put_replicated(jax.tree.map(np.asarray, state), setup.mesh)


def variables_of(train_state) -> dict:
  return {'params': train_state.params, 'batch_stats': train_state.batch_stats}


def ceiling_fns(spec: dict, variables, steps: int, chunks: int) -> dict:
  """Bare jitted model functions on the spec's shapes: ``train()`` runs ``steps`` updates,
  ``forward()`` ``chunks`` eval-mode forwards (each returns something to block on).

  ``variables`` (params and batch_stats, e.g. from ``Steps.init``) are copied, not consumed.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from jaxdisp import models, train  # pylint: disable=g-import-not-at-top
  cfg = config(spec)
  model = models.create_model(cfg.model, spec['num_classes'])
  tx = train.make_optimizer(cfg.train)
  shape = (spec['image_size'], spec['image_size'], 3)
  rng = np.random.default_rng(0)
  # Everything on one device with one kind of sharding, so the step's outputs can be fed back
  # without a recompilation (mixed input shardings would make the second call compile again).
  dev = jax.devices()[0]
  x = jax.device_put(rng.standard_normal((spec['batch'], *shape), np.float32), dev)
  y = jax.device_put(rng.integers(0, spec['num_classes'], spec['batch']).astype(np.int32), dev)
  xe = jax.device_put(rng.standard_normal((spec['eval_batch'], *shape), np.float32), dev)

  @functools.partial(jax.jit, donate_argnums=(0, 1, 2))
  def step(params, batch_stats, opt_state, x, y):
    def loss_fn(p):
      logits, upd = model.apply({'params': p, 'batch_stats': batch_stats}, x, train=True,
                                mutable=['batch_stats'])
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), upd
    (_, upd), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), upd['batch_stats'], opt_state

  forward = jax.jit(lambda v, x: jnp.argmax(model.apply(v, x, train=False), -1))
  variables = jax.device_put(jax.tree.map(jnp.copy, variables), dev)
  params = jax.device_put(jax.tree.map(jnp.copy, variables['params']), dev)
  box = [params, jax.device_put(jax.tree.map(jnp.copy, variables['batch_stats']), dev),
         jax.device_put(tx.init(params), dev)]
  box[:] = step(*box, x, y)  # compile now
  _common.block(box)

  def run_train():
    for _ in range(steps):
      box[:] = step(*box, x, y)
    return box

  def run_forward():
    return [forward(variables, xe) for _ in range(chunks)]

  return {'train': run_train, 'forward': run_forward, 'steps': steps, 'chunks': chunks}


def ceiling_seconds(spec: dict, ceil: dict) -> dict:
  """Model-only time of a round's required compute, split by phase."""
  steps = spec['labeled'] // spec['batch']
  train = spec['epochs'] * steps * ceil['step_s']
  pool = spec['epochs'] * spec['pool'] / spec['eval_batch'] * ceil['forward_chunk_s']
  test = spec['test'] / spec['eval_batch'] * ceil['forward_chunk_s']
  return {'train': train, 'pool_scoring': pool, 'test_eval': test, 'total': train + pool + test}


def trainer_functions(cfg, dataset, labeled_ids, pool_ids):
  """``(train_epoch, pool_pass, state_box)`` of the real trainer on one device: one epoch over
  ``labeled_ids`` (no recording), and one eval-mode pool pass (probabilities) over ``pool_ids``.
  Each returns something to block on. Weights are random, made on the host (no compiled init).
  """
  import functools  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from jaxdisp import input_pipeline, parallel, strategies, train  # pylint: disable=g-import-not-at-top
  mesh = parallel.make_mesh(1)
  setup = train.make_setup(cfg, mesh, dataset.image_shape, dataset.num_classes, record=False)
  steps_fns = train.compile_steps(setup)
  data = input_pipeline.put_data(dataset, mesh)
  labeled, nl = train.index_buffer(
      labeled_ids, train.labeled_capacity(len(labeled_ids), cfg.train.batch_size), mesh)
  pool, npool = train.index_buffer(pool_ids, train.pool_capacity(setup, len(pool_ids)), mesh)
  box = {'state': random_train_state(setup), 'history': steps_fns.empty_history(pool.shape[0]),
         'stats': steps_fns.empty_stats(pool.shape[0])}
  outputs = jax.jit(functools.partial(strategies.pool_outputs, setup, None),
                    static_argnames=('outputs',))

  def train_epoch():
    box['state'], box['history'], box['stats'], metrics = steps_fns.train_epoch(
        box['state'], box['history'], box['stats'], data, labeled, nl, pool, npool,
        jax.random.PRNGKey(1))
    return box['state'], metrics

  def pool_pass():
    return outputs(box['state'], data, pool, npool, jax.random.PRNGKey(2), outputs=('probs',))

  return train_epoch, pool_pass, box
