"""Training: the optimizer, one jitted call per epoch, pool scoring and test evaluation.

On TPU/GPU an epoch is a single compiled call: a ``fori_loop`` over the optimizer steps (the trip
count is a traced ``ceil(num_labeled / batch)``), then, on recorded epochs, an eval-mode pass over
the unlabeled pool that writes each sample's predicted label into row ``t`` of the device-resident
prediction history. On CPU the same three pieces (begin, step, end) are compiled separately and
the step loop runs in Python (``train.step_loop``; see :func:`step_loop`). The labeled set and the
pool are fixed-capacity index buffers plus a count, so a growing labeled set reuses the compiled
epoch as long as it stays in its capacity bucket (see :func:`labeled_capacity`). State and
history are donated, so they are updated in place.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from absl import logging

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from jaxdisp import input_pipeline, parallel
from jaxdisp.errors import ConfigError

Array = jax.Array


@flax.struct.dataclass
class TrainState:
  """Everything that changes during a round's training (a pytree; checkpointed by orbax)."""
  epoch: Array  # int32: epochs completed
  params: Any
  batch_stats: Any
  opt_state: Any


@flax.struct.dataclass
class DeviceData:
  """The dataset on device (uint8 images, int32 labels) and its normalisation.

  ``train_images`` is replicated, or split along the samples over ``data`` when
  ``dataset.placement`` says so (padded to a multiple of the device count; batches are then
  gathered with :func:`parallel.gather_rows`). Everything else is replicated.
  """
  train_images: Array
  train_labels: Array
  test_images: Array
  test_labels: Array
  mean: Array
  std: Array


def shards_train_images(cfg) -> bool:
  """``dataset.placement``: ``sharded``, ``replicated``, or ``auto`` = sharded when the run has
  several processes (each host then loads only its devices' rows)."""
  placement = cfg.dataset.placement
  return placement == 'sharded' or (placement == 'auto' and jax.process_count() > 1)


def put_data(dataset, mesh: Mesh, shard_train: bool = False) -> DeviceData:
  """Copies a host ``data.Dataset`` to the devices once.

  Replicated, every device holds the training images (CIFAR's are 150 MB). Sharded, each
  device holds ``1 / devices`` of them, each process reads only its own devices' rows, and the
  normalisation statistics are summed exactly over the processes.
  """
  if shard_train:
    n, channels = dataset.train_images.shape[0], dataset.train_images.shape[-1]
    local = [0] * (2 * channels + 1)  # sums, sums of squares, count over this process's rows

    def tally(block):  # each block of real rows as it is loaded (not read twice)
      total, squares, count = input_pipeline.channel_sums(block)
      local[:] = [x + y for x, y in zip(local, total + squares + [count])]

    images = parallel.put_rows(dataset.train_images, parallel.round_up(n, mesh.size), mesh,
                               on_rows=tally)
    sums = parallel.sum_over_processes(local)
    mean, std = input_pipeline.stats_from_sums(sums[:channels], sums[channels:-1], sums[-1])
    logging.info('process %d holds training images %s of %d', jax.process_index(),
                 ', '.join(f'[{a}, {min(b, n)})' for a, b in parallel.local_row_ranges(images)), n)
  else:
    images = parallel.put_replicated(dataset.train_images, mesh)
    mean, std = input_pipeline.channel_stats(dataset.train_images)
  rest = parallel.put_replicated(dict(
      train_labels=dataset.train_labels.astype(np.int32),
      test_images=dataset.test_images, test_labels=dataset.test_labels.astype(np.int32),
      mean=mean, std=std), mesh)
  return DeviceData(train_images=images, **rest)


MIN_BUCKET = 2048


def labeled_capacity(num_labeled: int, batch_size: int) -> int:
  """Capacity bucket of the labeled index buffer: the next power of two >= 2048.

  Every labeled-set size in one bucket (<= 2048, <= 4096, <= 8192, ...) runs the same compiled
  epoch; padding only costs the shuffle's sort, never extra optimizer steps (the step count is
  ``ceil(num_labeled / batch)``). An active-learning run passes the capacity of its final labeled
  set instead, so all of its rounds share one compile.
  """
  cap = max(MIN_BUCKET, 1 << (max(num_labeled, 1) - 1).bit_length())
  return parallel.round_up(cap, batch_size)


def lr_for_epoch(train_cfg, epoch: int | Array) -> Array:
  """Step schedule: ``lr * gamma^(milestones passed)``, milestones as fractions of the epochs."""
  milestones = [round(m * train_cfg.epochs) for m in train_cfg.lr_milestones]
  passed = sum((epoch >= m).astype(jnp.int32) if isinstance(epoch, jax.Array) else int(epoch >= m)
               for m in milestones)
  return train_cfg.learning_rate * train_cfg.lr_gamma**passed


def make_optimizer(train_cfg) -> optax.GradientTransformation:
  """SGD + Nesterov momentum + L2 weight decay added to the gradient (as torch.optim.SGD)."""

  def sgd(learning_rate):
    return optax.chain(
        optax.add_decayed_weights(train_cfg.weight_decay),
        optax.sgd(learning_rate, momentum=train_cfg.momentum or None,
                  nesterov=train_cfg.nesterov and train_cfg.momentum > 0))

  return optax.inject_hyperparams(sgd)(learning_rate=train_cfg.learning_rate)


# An epoch whose mean training loss exceeds this many times ln(num_classes) has diverged. ln(C) is
# the loss of a uniform guess, where training starts; healthy training only goes down from there
# (measured on the tiny test config: <= 1.35 ln C at every learning rate up to 3, 150x the default).
DIVERGENCE_FACTOR = 10.0


def diverged(mean_loss: float, num_classes: int, factor: float = DIVERGENCE_FACTOR) -> bool:
  """True when an epoch's mean training loss is finite but blown up: above ``factor * ln(C)``.

  Cross-entropy above ``10 ln C`` means the model gives the true class of the average training
  sample a probability below ``C**-10``: worse than guessing, on data it trains on. A fixed
  threshold (not one relative to earlier epochs) gives the same verdict on a resumed run.
  NaN/inf is not "diverged" here; :func:`epoch_problem` reports it, with the step.
  """
  return math.isfinite(mean_loss) and mean_loss > factor * math.log(max(num_classes, 2))


def epoch_problem(round_: int, epoch: int, metrics: dict, num_classes: int) -> str | None:
  """The one-line reason to stop after this epoch (NaN/inf loss, or :func:`diverged`), or None."""
  advice = 'the last good checkpoint is kept (lower train.learning_rate)'
  if not bool(metrics['finite']):
    return (f'training loss is NaN/inf in round {round_}, epoch {epoch}, step '
            f'{int(metrics["first_bad_step"])}; {advice}')
  loss = float(metrics['loss'])
  if diverged(loss, num_classes):
    return (f'training diverged in round {round_}, epoch {epoch}: mean loss {loss:.3g} > '
            f'{DIVERGENCE_FACTOR:g} x ln({num_classes} classes) = '
            f'{DIVERGENCE_FACTOR * math.log(max(num_classes, 2)):.3g}; {advice}')
  return None


def history_dtype(num_classes: int):
  return jnp.int8 if num_classes <= 127 else jnp.int16


@dataclasses.dataclass(frozen=True)
class Recording:
  """Which epochs write a row of the prediction history, and how."""
  epochs: int
  every: int = 1
  start: int = 0
  augmented_views: bool = False

  enabled: bool = True

  @property
  def num_rows(self) -> int:
    return len(range(self.start, self.epochs, self.every)) if self.enabled else 0

  def slot(self, epoch):
    """Row of ``epoch`` in the history and whether it is recorded (works on traced ints)."""
    offset = epoch - self.start
    return offset // self.every, (offset >= 0) & (offset % self.every == 0)

  @classmethod
  def from_config(cls, cfg) -> 'Recording':
    d = cfg.dispersion
    enabled = cfg.strategy == 'dispersion' or d.record_always
    return cls(cfg.train.epochs, d.record_every, d.record_from_epoch, d.augmented_views, enabled)


class Trainer:
  """Builds the model, the optimizer and the jitted epoch/eval/pool functions for one config.

  Construct once per experiment; the compiled functions are reused by every round.
  """

  def __init__(self, model: nn.Module, cfg, mesh: Mesh, image_shape, num_classes: int):
    d = mesh.size
    t = cfg.train
    if t.batch_size % d:
      raise ConfigError(f'train.batch_size={t.batch_size} must be a multiple of the '
                        f'{d} devices')
    self.model, self.cfg, self.mesh = model, cfg, mesh
    self.image_shape, self.num_classes = tuple(image_shape), num_classes
    self.batch_size = t.batch_size
    self.chunk = parallel.round_up(t.eval_batch_size, d)
    self.tx = make_optimizer(t)
    self.recording = Recording.from_config(cfg)
    self.shard_train = shards_train_images(cfg)
    # Several (simulated) CPU devices: wait for each step before dispatching the next. With
    # several collective programs in flight on 2 busy cores, XLA:CPU's rendezvous deadlocked in
    # about a third of the runs here (then aborts after 40 s); one at a time it never did, and on
    # CPU running ahead buys little.
    self.one_program_at_a_time = mesh.devices.flat[0].platform == 'cpu' and d > 1
    self.compute_dtype = jnp.bfloat16 if cfg.model.dtype == 'bfloat16' else jnp.float32
    rep = parallel.replicated(mesh)
    self.init = jax.jit(self._init, out_shardings=rep)
    if step_loop(cfg, mesh) == 'device':
      self.train_epoch = jax.jit(self._train_epoch, donate_argnums=(0, 1))
    else:
      self._begin_jit = jax.jit(self._epoch_begin, donate_argnums=(0,))
      self._step_jit = jax.jit(self._step, donate_argnums=(1, 2))
      self._end_jit = jax.jit(self._epoch_end, donate_argnums=(0, 1))
      self.train_epoch = self._train_epoch_host_loop
    self.evaluate = jax.jit(self._evaluate)
    self._empty_history = jax.jit(self._new_history, static_argnums=(0,),
                                  out_shardings=parallel.sharded(mesh, 2, axis=1))
    self.pool_outputs = jax.jit(self._pool_outputs, static_argnames=('outputs',))

  # ---- buffers --------------------------------------------------------------------------------

  def pool_capacity(self, num_pool: int) -> int:
    return parallel.round_up(max(num_pool, 1), self.chunk)

  def index_buffer(self, ids: np.ndarray, capacity: int) -> tuple[Array, Array]:
    """Pads dataset ids to ``capacity`` and puts them on device, split over ``data``."""
    if len(ids) > capacity:
      raise ValueError(f'{len(ids)} ids do not fit a buffer of {capacity}')
    buf = np.zeros(capacity, np.int32)
    buf[:len(ids)] = ids
    return parallel.put_sharded(buf, self.mesh), np.int32(len(ids))

  def empty_history(self, pool_capacity: int) -> Array:
    """A ``[T, pool_capacity]`` history of -1 (nothing recorded), split along the pool."""
    return self._empty_history(pool_capacity)

  def _new_history(self, pool_capacity: int) -> Array:
    shape = (self.recording.num_rows, pool_capacity)
    return jnp.full(shape, -1, history_dtype(self.num_classes))

  # ---- jitted bodies --------------------------------------------------------------------------

  def _init(self, key: Array) -> TrainState:
    dummy = jnp.zeros((1, *self.image_shape), self.compute_dtype)
    variables = self.model.init(key, dummy, train=False)
    params = variables['params']
    return TrainState(epoch=jnp.int32(0), params=params,
                      batch_stats=variables.get('batch_stats', {}),
                      opt_state=self.tx.init(params))

  def _inputs(self, data: DeviceData, idx: Array, keys: Array | None, train_split=True):
    if train_split and self.shard_train:
      images = parallel.gather_rows(data.train_images, idx, self.mesh)
    else:
      images = (data.train_images if train_split else data.test_images)[idx]
    if keys is not None:
      images = input_pipeline.random_crop_flip(keys, images)
    return input_pipeline.normalize(images, data.mean, data.std, self.compute_dtype)

  def _variables(self, state: TrainState):
    return {'params': state.params, 'batch_stats': state.batch_stats}

  def _train_step(self, state: TrainState, data: DeviceData, idx: Array, mask: Array,
                  key: Array):
    k_aug, k_drop = jax.random.split(key)
    aug_keys = jax.random.split(k_aug, idx.shape[0]) if self.cfg.train.augment else None
    x = self._inputs(data, idx, aug_keys)
    labels = data.train_labels[idx]
    weights = mask.astype(jnp.float32)
    count = jnp.maximum(weights.sum(), 1.0)

    def loss_fn(params):
      logits, updates = self.model.apply(
          {'params': params, 'batch_stats': state.batch_stats}, x, train=True, mask=mask,
          rngs={'dropout': k_drop}, mutable=['batch_stats'])
      losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
      return (losses * weights).sum() / count, (logits, updates['batch_stats'])

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params)
    updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    correct = ((jnp.argmax(logits, -1) == labels) * weights).sum()
    state = state.replace(params=params, batch_stats=batch_stats, opt_state=opt_state)
    return state, (loss * weights.sum(), correct, weights.sum())

  def _record(self, state: TrainState, data: DeviceData, history: Array, pool: Array,
              num_pool: Array, key: Array) -> Array:
    """Writes the predicted label of every pool sample into the epoch's history row."""
    slot, _ = self.recording.slot(state.epoch)
    variables = self._variables(state)

    def predict(idx, valid):
      keys = None
      if self.recording.augmented_views:
        keys = jax.vmap(jax.random.fold_in, (None, 0))(key, idx)
      logits = self.model.apply(variables, self._inputs(data, idx, keys), train=False)
      labels = jnp.argmax(logits, -1).astype(history.dtype)
      return jnp.where(valid, labels, jnp.array(-1, history.dtype))

    row = parallel.map_in_chunks(predict, pool, num_pool, self.chunk, self.mesh)
    return jax.lax.dynamic_update_slice(history, row[None], (slot, 0))

  def _epoch_begin(self, state: TrainState, labeled: Array, num_labeled: Array, key: Array):
    """Sets the epoch's learning rate and shuffles the labeled prefix (padding sorts last)."""
    k_shuffle, k_steps, k_pool = jax.random.split(jax.random.fold_in(key, state.epoch), 3)
    lr = lr_for_epoch(self.cfg.train, state.epoch)
    state = state.replace(opt_state=state.opt_state._replace(
        hyperparams={**state.opt_state.hyperparams, 'learning_rate': lr}))
    cap = labeled.shape[0]
    valid = jnp.arange(cap) < num_labeled
    order = jnp.argsort(jnp.where(valid, jax.random.uniform(k_shuffle, (cap,)), 2.0))
    return state, labeled[order], (k_steps, k_pool), lr, _zero_sums()

  def _step(self, s: Array, state: TrainState, sums, data: DeviceData, shuffled: Array,
            num_labeled: Array, k_steps: Array):
    """Optimizer step ``s`` of the epoch on slice ``s`` of the shuffled labeled ids."""
    b = self.batch_size
    idx = jax.lax.dynamic_slice(shuffled, (s * b,), (b,))
    mask = s * b + jnp.arange(b) < num_labeled
    idx, mask = parallel.constrain(idx, self.mesh), parallel.constrain(mask, self.mesh)
    state, metrics = self._train_step(state, data, idx, mask, jax.random.fold_in(k_steps, s))
    first_bad = jnp.where((sums[3] < 0) & ~jnp.isfinite(metrics[0]), s, sums[3])
    return state, (*jax.tree.map(jnp.add, sums[:3], metrics), first_bad)

  def _epoch_end(self, state: TrainState, history: Array, sums, data: DeviceData, pool: Array,
                 num_pool: Array, k_pool: Array, lr: Array, num_steps: Array):
    """On recorded epochs, scores the pool into the history; returns the epoch's metrics."""
    if self.recording.num_rows:
      _, recorded = self.recording.slot(state.epoch)
      history = jax.lax.cond(
          recorded, lambda h: self._record(state, data, h, pool, num_pool, k_pool),
          lambda h: h, history)
    loss_sum, correct, count, first_bad = sums
    metrics = {'loss': loss_sum / count, 'train_accuracy': correct / count, 'steps': num_steps,
               'learning_rate': lr, 'finite': jnp.isfinite(loss_sum),
               'first_bad_step': first_bad}
    return state.replace(epoch=state.epoch + 1), history, metrics

  def _train_epoch(self, state: TrainState, history: Array, data: DeviceData, labeled: Array,
                   num_labeled: Array, pool: Array, num_pool: Array, key: Array):
    """One epoch over the labeled set, then (on recorded epochs) one pass over the pool.

    Returns the new state (``epoch`` + 1), the history and the epoch's summed metrics.
    """
    state, shuffled, (k_steps, k_pool), lr, sums = self._epoch_begin(state, labeled, num_labeled,
                                                                      key)
    num_steps = (num_labeled + self.batch_size - 1) // self.batch_size

    def step(s, carry):
      return self._step(s, *carry, data, shuffled, num_labeled, k_steps)

    state, sums = jax.lax.fori_loop(0, num_steps, step, (state, sums))
    return self._epoch_end(state, history, sums, data, pool, num_pool, k_pool, lr, num_steps)

  def _train_epoch_host_loop(self, state: TrainState, history: Array, data: DeviceData,
                             labeled: Array, num_labeled: Array, pool: Array, num_pool: Array,
                             key: Array):
    """The same epoch as :meth:`_train_epoch`, with the step loop in Python.

    Three compiled functions (begin, step, end), dispatched asynchronously: nothing but the
    step count is read back. XLA:CPU runs convolution gradients inside a ``while`` loop 10-40x
    slower than outside one (jax-ml/jax#12868), so this is the default on CPU.
    """
    n = int(num_labeled)
    state, shuffled, (k_steps, k_pool), lr, sums = self._begin_jit(state, labeled, num_labeled,
                                                                    key)
    for s in range(-(-n // self.batch_size)):
      state, sums = self._step_jit(jnp.int32(s), state, sums, data, shuffled, num_labeled,
                                   k_steps)
      if self.one_program_at_a_time:
        jax.block_until_ready(sums)
    num_steps = jnp.int32(-(-n // self.batch_size))
    out = self._end_jit(state, history, sums, data, pool, num_pool, k_pool, lr, num_steps)
    if self.one_program_at_a_time:
      jax.block_until_ready(out)
    return out

  def _evaluate(self, state: TrainState, data: DeviceData) -> Array:
    """Top-1 accuracy on the test split (eval mode, no augmentation)."""
    n = data.test_labels.shape[0]
    cap = parallel.round_up(n, self.chunk)
    variables = self._variables(state)

    def correct(idx, valid):
      logits = self.model.apply(variables, self._inputs(data, idx, None, train_split=False),
                                train=False)
      return (jnp.argmax(logits, -1) == data.test_labels[idx]) & valid

    idx = jnp.minimum(jnp.arange(cap), n - 1)
    hits = parallel.map_in_chunks(correct, idx, jnp.int32(n), self.chunk, self.mesh)
    return hits.sum() / n

  def _pool_outputs(self, state: TrainState, data: DeviceData, pool: Array, num_pool: Array,
                    key: Array, outputs: tuple[str, ...] = ('probs',)):
    """Per-sample outputs of the final model on pool (or any index buffer), in eval mode.

    ``outputs`` names what to return: ``probs`` [n, C], ``features`` [n, F], ``bald`` [n]
    (mutual information over ``bald.mc_samples`` Monte-Carlo dropout passes of the head).
    Rows past ``num_pool`` are padding.
    """
    variables = self._variables(state)
    mc = self.cfg.bald.mc_samples

    def per_chunk(idx, valid):
      del valid
      feats = self.model.apply(variables, self._inputs(data, idx, None), method='embed')
      out = {}
      if 'features' in outputs:
        out['features'] = feats
      if 'probs' in outputs:
        out['probs'] = jax.nn.softmax(
            self.model.apply(variables, feats, method='classify'))
      if 'bald' in outputs:
        def mc_probs(k):
          keys = jax.vmap(jax.random.fold_in, (None, 0))(k, idx)  # layout-independent dropout
          logits = jax.vmap(lambda kk, f: self.model.apply(
              variables, f[None], deterministic=False, method='classify',
              rngs={'dropout': kk})[0])(keys, feats)
          return jax.nn.softmax(logits)
        probs = jax.lax.map(mc_probs, jax.random.split(key, mc))  # [mc, n, C]
        out['bald'] = _entropy(probs.mean(0)) - _entropy(probs).mean(0)
      return out

    return parallel.map_in_chunks(per_chunk, pool, num_pool, self.chunk, self.mesh)


def _zero_sums():
  # sum of loss * n, correct, n; the first step with a NaN/inf loss (-1 = none)
  return (jnp.float32(0), jnp.float32(0), jnp.float32(0), jnp.int32(-1))


def step_loop(cfg, mesh: Mesh) -> str:
  """Where the epoch's step loop runs: ``device`` (one call per epoch) or ``host``."""
  if cfg.train.step_loop != 'auto':
    return cfg.train.step_loop
  return 'host' if mesh.devices.flat[0].platform == 'cpu' else 'device'


def _entropy(p: Array) -> Array:
  return -jnp.sum(jnp.where(p > 0, p * jnp.log(p), 0.0), axis=-1)
