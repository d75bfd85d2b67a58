"""Training: module-level steps over explicit state, jitted by the caller.

Everything a compiled function needs to know that is not an array -- the model, the optimizer,
the batch size, which epochs record the pool -- is a frozen :class:`TrainSetup`; the steps take it
as their first argument and the caller closes over it (``jax.jit(functools.partial(train_epoch,
setup), donate_argnums=...)``; :func:`compile_steps` does exactly that for a run).

On TPU/GPU an epoch is one compiled call (:func:`train_epoch`): a ``fori_loop`` over the
optimizer steps (the trip count is a traced ``ceil(num_labeled / batch)``), then, on recorded
epochs, an eval-mode pass over the unlabeled pool (:func:`record_pool`) that writes each sample's
predicted label into row ``t`` of the device-resident prediction history and, when the strategy
asks, updates running per-sample statistics of the same logits (:data:`STATS`; the training
dynamics scores). On CPU the same three
pieces (:func:`epoch_begin`, :func:`epoch_step`, :func:`epoch_end`) are compiled separately and
the step loop runs in Python (``train.step_loop``; XLA:CPU runs convolution gradients 10-40x
slower inside a loop, jax-ml/jax#12868). The labeled set and the pool are fixed-capacity index
buffers plus a count, so a growing labeled set reuses the compiled epoch (see
:func:`labeled_capacity`). State, history and statistics are donated, so they are updated in
place.

A deep ensemble (``TrainSetup.members`` = K > 1) runs the same steps under ``jax.vmap`` over a
stacked state, one compiled program per step for all K members (section "deep ensembles").

A strategy may ask for an auxiliary head trained alongside the task model (:class:`AuxHead`,
``Strategy.aux_head``; Learning Loss's loss-prediction module): the model is then built with it
(``models.Classifier.aux``), its parameters are part of ``TrainState.params`` (one optimizer,
one checkpoint) and each step minimises ``task loss + weight * aux loss`` (:func:`train_step`).
Without one the steps are exactly those of before.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding

from jaxdisp import input_pipeline, models, parallel
from jaxdisp.errors import ConfigError
from jaxdisp.input_pipeline import DeviceData

Array = jax.Array


@flax.struct.dataclass
class TrainState:
  """Everything that changes during a round's training (a pytree; checkpointed by orbax)."""
  epoch: Array  # int32: epochs completed
  params: Any
  batch_stats: Any
  opt_state: Any


@flax.struct.dataclass
class StepSums:
  """Running sums over an epoch's optimizer steps."""
  loss: Array  # sum of loss x real samples
  correct: Array
  count: Array  # real (unpadded) samples
  first_bad_step: Array  # first step whose loss was NaN/inf, -1 = none
  aux: Array = 0.0  # sum over steps of the auxiliary head's loss (0 without one)

  @classmethod
  def zeros(cls) -> 'StepSums':
    return cls(jnp.float32(0), jnp.float32(0), jnp.float32(0), jnp.int32(-1), jnp.float32(0))


@flax.struct.dataclass
class EpochMetrics:
  """One epoch's training metrics (device scalars; the caller decides what to read back)."""
  loss: Array
  train_accuracy: Array
  steps: Array
  learning_rate: Array
  finite: Array  # False when any step's loss was NaN/inf
  first_bad_step: Array
  # the epoch's mean auxiliary-head loss per step (AuxHead: Learning Loss's ranking loss); nan
  # when the model has no auxiliary head
  aux_loss: Array = float('nan')

  def to_host(self) -> dict:
    """Every metric as a Python number, in one device-to-host transfer."""
    host = jax.device_get(self)
    return {f.name: getattr(host, f.name).item() for f in dataclasses.fields(self)}


# Running per-sample statistics the record pass can keep next to the prediction history, by
# record kind: the float32 ``[P]`` arrays each kind carries (see :func:`record_pool`).
STATS = {
    'prob_moments': ('prob_mean', 'prob_m2'),  # Welford mean and M2 of the top-1 probability
    'margin_sum': ('margin_sum',),  # sum of the top-1 minus top-2 logit
}


@dataclasses.dataclass(frozen=True)
class Recording:
  """Which epochs write a row of the prediction history, how, and which running statistics
  (``stats``: kinds of :data:`STATS`) the same pool pass also keeps."""
  epochs: int
  every: int = 1
  start: int = 0
  augmented_views: bool = False
  enabled: bool = True
  stats: tuple = ()

  @property
  def stat_fields(self) -> tuple[str, ...]:
    """The ``[P]`` arrays of the requested statistics (empty when none is recorded)."""
    if not self.enabled:
      return ()
    return tuple(f for kind in self.stats for f in STATS[kind])

  @property
  def num_rows(self) -> int:
    return len(range(self.start, self.epochs, self.every)) if self.enabled else 0

  def slot(self, epoch):
    """Row of ``epoch`` in the history and whether it is recorded (works on traced ints)."""
    offset = epoch - self.start
    return offset // self.every, (offset >= 0) & (offset % self.every == 0)

  @classmethod
  def from_config(cls, cfg, enabled: bool, stats: tuple = ()) -> 'Recording':
    d = cfg.dispersion
    unknown = [k for k in stats if k not in STATS]
    if unknown:
      raise ValueError(f'unknown record statistics {unknown}; known: {tuple(STATS)}')
    return cls(cfg.train.epochs, d.record_every, d.record_from_epoch, d.augmented_views, enabled,
               tuple(sorted(set(stats))))


@dataclasses.dataclass(frozen=True)
class AuxHead:
  """An auxiliary head trained alongside the task model, declared by a strategy
  (``Strategy.aux_head(cfg)``; hashable: it is part of the static :class:`TrainSetup`).

  ``module`` maps the backbone's stage outputs (a tuple of ``[B, H, W, C]``) to one value per
  sample ``[B]``; its parameters are ``params['aux']`` and the task model's optimizer trains them
  (same schedule, momentum, weight decay). Every step minimises ``mean task loss + weight *
  loss(aux output, per-sample task losses (no gradient), mask)``; ``mask`` marks the real rows of
  a padded batch. From epoch ``detach_epoch`` on (0-based; None = never) the stage outputs reach
  the head without gradient: it still learns, the backbone no longer learns from it.
  """
  module: nn.Module
  loss: Callable[[Array, Array, Array], Array]  # (aux [B], task losses [B], mask [B]) -> scalar
  weight: float = 1.0
  detach_epoch: int | None = None


@dataclasses.dataclass(frozen=True)
class TrainSetup:
  """The static half of training: what the compiled steps close over (hashable, no arrays)."""
  model: nn.Module
  tx: optax.GradientTransformation
  mesh: Mesh
  train_cfg: Any  # the frozen ``train`` config group (schedule, batch size, augmentation)
  image_shape: tuple
  num_classes: int
  chunk: int  # pool/eval chunk, a multiple of the device count
  recording: Recording
  shard_train: bool  # training images split over ``data`` (dataset.placement)
  compute_dtype: Any
  step_loop: str  # 'device' | 'host'
  # Deep ensembles (``Strategy.members``): K > 1 independent models trained as one program, their
  # states stacked on a leading member axis (see "deep ensembles" below); 1 = the single model.
  members: int = 1
  aux: AuxHead | None = None  # a strategy's auxiliary head (``Strategy.aux_head``), or none

  @property
  def batch_size(self) -> int:
    return self.train_cfg.batch_size


def make_setup(cfg, mesh: Mesh, image_shape, num_classes: int, record: bool,
               stats: tuple = (), members: int = 1, aux: AuxHead | None = None) -> TrainSetup:
  """The :class:`TrainSetup` of a config; ``record``: whether epochs record the pool's
  predicted labels; ``stats``: running statistics (kinds of :data:`STATS`) recorded with them;
  ``members``: models trained together (an ensemble when > 1); ``aux``: an auxiliary head
  trained alongside the task model (:class:`AuxHead`), or None."""
  d = mesh.size
  t = cfg.train
  if t.batch_size % d:
    raise ConfigError(f'train.batch_size={t.batch_size} must be a multiple of the '
                      f'{d} devices')
  if aux is not None and int(members) > 1:
    raise ConfigError(f'an auxiliary head (strategy={cfg.strategy}) cannot be trained with '
                      f'{members} ensemble members; use one')
  return TrainSetup(
      model=models.create_model(cfg.model, num_classes, aux=None if aux is None else aux.module),
      tx=make_optimizer(t), mesh=mesh,
      train_cfg=ml_collections.FrozenConfigDict(t), image_shape=tuple(image_shape), num_classes=num_classes,
      chunk=parallel.round_up(t.eval_batch_size, d),
      recording=Recording.from_config(cfg, record, stats),
      shard_train=shards_train_images(cfg),
      compute_dtype=jnp.bfloat16 if cfg.model.dtype == 'bfloat16' else jnp.float32,
      step_loop=step_loop(cfg, mesh), members=int(members), aux=aux)


# ---- configuration helpers ----------------------------------------------------------------------

def shards_train_images(cfg) -> bool:
  """``dataset.placement``: ``sharded``, ``replicated``, or ``auto`` = sharded when the run has
  several processes (each host then loads only its devices' rows)."""
  placement = cfg.dataset.placement
  return placement == 'sharded' or (placement == 'auto' and jax.process_count() > 1)


def step_loop(cfg, mesh: Mesh) -> str:
  """Where the epoch's step loop runs: ``device`` (one call per epoch) or ``host``."""
  if cfg.train.step_loop != 'auto':
    return cfg.train.step_loop
  return 'host' if mesh.devices.flat[0].platform == 'cpu' else 'device'


MIN_BUCKET = 2048


def labeled_capacity(num_labeled: int, batch_size: int) -> int:
  """Capacity bucket of the labeled index buffer: the next power of two >= 2048.

  Every labeled-set size in one bucket (<= 2048, <= 4096, ...) runs the same compiled epoch;
  padding only costs the shuffle's sort, never extra optimizer steps (the step count is
  ``ceil(num_labeled / batch)``). An active-learning run passes the capacity of its final labeled
  set instead, so all of its rounds share one compile.
  """
  cap = max(MIN_BUCKET, 1 << (max(num_labeled, 1) - 1).bit_length())
  return parallel.round_up(cap, batch_size)


def pool_capacity(setup: TrainSetup, num_pool: int) -> int:
  return parallel.round_up(max(num_pool, 1), setup.chunk)


def index_buffer(ids: np.ndarray, capacity: int, mesh: Mesh) -> tuple[Array, np.int32]:
  """Pads dataset ids to ``capacity`` and puts them on device, split over ``data``."""
  if len(ids) > capacity:
    raise ValueError(f'{len(ids)} ids do not fit a buffer of {capacity}')
  buf = np.zeros(capacity, np.int32)
  buf[:len(ids)] = ids
  return parallel.put_sharded(buf, mesh), np.int32(len(ids))


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


# ---- the steps (pure; jitted by the caller) -----------------------------------------------------

def init_state(setup: TrainSetup, key: Array) -> TrainState:
  """A freshly initialised model and optimizer (epoch 0)."""
  dummy = jnp.zeros((1, *setup.image_shape), setup.compute_dtype)
  variables = setup.model.init(key, dummy, train=False)
  params = variables['params']
  return TrainState(epoch=jnp.int32(0), params=params,
                    batch_stats=variables.get('batch_stats', {}),
                    opt_state=setup.tx.init(params))


def history_sharding(setup: TrainSetup) -> NamedSharding:
  """The history's layout: ``[T, P]`` split along the pool axis; replicated when it has no rows
  (strategies that record nothing). XLA hands a zero-size output back replicated whatever its
  input was, so a split empty history changed layout after one epoch and compiled the epoch
  again."""
  if not setup.recording.num_rows:
    return parallel.replicated(setup.mesh)
  return parallel.sharded(setup.mesh, 2, axis=1)


def empty_history(setup: TrainSetup, pool_capacity: int) -> Array:
  """A ``[T, pool_capacity]`` history of -1 (nothing recorded)."""
  shape = (setup.recording.num_rows, pool_capacity)
  return jnp.full(shape, -1, history_dtype(setup.num_classes))


def empty_stats(setup: TrainSetup, pool_capacity: int) -> dict:
  """Zeroed running statistics ``{field: float32 [pool_capacity]}`` ({} when none is kept)."""
  return {f: jnp.zeros((pool_capacity,), jnp.float32) for f in setup.recording.stat_fields}


def variables(state: TrainState) -> dict:
  return {'params': state.params, 'batch_stats': state.batch_stats}


def model_inputs(setup: TrainSetup, data: DeviceData, idx: Array, keys: Array | None = None,
                 train_split: bool = True) -> Array:
  """Normalised (and, with ``keys``, augmented) images of rows ``idx`` of a split."""
  if train_split and setup.shard_train:
    images = parallel.gather_rows(data.train_images, idx, setup.mesh)
  else:
    images = (data.train_images if train_split else data.test_images)[idx]
  if keys is not None:
    images = input_pipeline.random_crop_flip(keys, images)
  return input_pipeline.normalize(images, data.mean, data.std, setup.compute_dtype)


def train_step(setup: TrainSetup, state: TrainState, data: DeviceData, idx: Array, mask: Array,
               key: Array) -> tuple[TrainState, StepSums]:
  """One SGD step on the labeled rows ``idx`` (``mask``: real rows of a padded batch).

  With an auxiliary head (:class:`AuxHead`) the step minimises the mean task loss + ``weight`` x
  the head's loss; the head sees the stage outputs detached from epoch ``detach_epoch`` on
  (``state.epoch``, traced: one compiled step for every epoch)."""
  k_aug, k_drop = jax.random.split(key)
  aug_keys = jax.random.split(k_aug, idx.shape[0]) if setup.train_cfg.augment else None
  x = model_inputs(setup, data, idx, aug_keys)
  labels = data.train_labels[idx]
  weights = mask.astype(jnp.float32)
  count = jnp.maximum(weights.sum(), 1.0)
  aux = setup.aux

  def loss_fn(params):
    v = {'params': params, 'batch_stats': state.batch_stats}
    if aux is None:
      logits, updates = setup.model.apply(v, x, train=True, mask=mask, rngs={'dropout': k_drop},
                                          mutable=['batch_stats'])
    else:
      detach = (jnp.bool_(False) if aux.detach_epoch is None
                else state.epoch >= aux.detach_epoch)
      (logits, out), updates = setup.model.apply(
          v, x, mask=mask, detach=detach, rngs={'dropout': k_drop}, mutable=['batch_stats'],
          method='train_with_aux')
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    task = (losses * weights).sum() / count
    if aux is None:
      return task, (logits, updates['batch_stats'], task, jnp.float32(0))
    aux_loss = aux.loss(out, jax.lax.stop_gradient(losses), mask)
    return task + aux.weight * aux_loss, (logits, updates['batch_stats'], task, aux_loss)

  (_, (logits, batch_stats, loss, aux_loss)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(state.params)
  updates, opt_state = setup.tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  correct = ((jnp.argmax(logits, -1) == labels) * weights).sum()
  state = state.replace(params=params, batch_stats=batch_stats, opt_state=opt_state)
  return state, StepSums(loss * weights.sum(), correct, weights.sum(), jnp.int32(-1), aux_loss)


def record_pool(setup: TrainSetup, state: TrainState, data: DeviceData, history: Array,
                stats: dict, pool: Array, num_pool: Array, key: Array) -> tuple[Array, dict]:
  """Writes the predicted label of every pool sample into the epoch's history row, and updates
  the running statistics ``stats`` (:data:`STATS`) from the same logits: one forward pass.

  * ``prob_moments``: Welford's running mean and M2 (sum of squared deviations) of the top-1
    softmax probability of each epoch (the probability of that epoch's own predicted class),
    so ``std = sqrt(M2 / T)`` at the end; numerically stable, two floats per sample;
  * ``margin_sum``: the running sum of the top-1 minus top-2 logit.

  Statistics are elementwise over ``[P]`` (never ``[T, P, C]``); padding rows stay 0.
  """
  slot, _ = setup.recording.slot(state.epoch)
  v = variables(state)
  kinds = setup.recording.stats if setup.recording.enabled else ()

  def predict(idx, valid):
    keys = None
    if setup.recording.augmented_views:
      keys = jax.vmap(jax.random.fold_in, (None, 0))(key, idx)
    logits = setup.model.apply(v, model_inputs(setup, data, idx, keys), train=False)
    labels = jnp.argmax(logits, -1).astype(history.dtype)
    labels = jnp.where(valid, labels, jnp.array(-1, history.dtype))
    if not kinds:
      return labels
    return labels, _per_sample_statistics(logits.astype(jnp.float32), kinds, valid)

  out = parallel.map_in_chunks(predict, pool, num_pool, setup.chunk, setup.mesh)
  if kinds:
    row, values = out
    stats = _update_stats(stats, values, (slot + 1).astype(jnp.float32))
  else:
    row = out
  return jax.lax.dynamic_update_slice(history, row[None], (slot, 0)), stats


def _per_sample_statistics(logits: Array, kinds: tuple, valid: Array) -> dict:
  """This epoch's value of each statistic for a chunk of logits ``[chunk, C]``."""
  out = {}
  top1 = logits.max(-1)
  if 'prob_moments' in kinds:  # max softmax = exp(0) / sum exp(z - max z)
    out['top_prob'] = 1.0 / jnp.sum(jnp.exp(logits - top1[:, None]), -1)
  if 'margin_sum' in kinds:  # the top-1 entry masked out (not lax.top_k: 25x slower on CPU)
    first = jnp.arange(logits.shape[-1]) == jnp.argmax(logits, -1)[:, None]
    out['margin'] = top1 - jnp.where(first, -jnp.inf, logits).max(-1)
  return {k: jnp.where(valid, x, 0.0) for k, x in out.items()}


def _update_stats(stats: dict, values: dict, n: Array) -> dict:
  """Adds epoch ``n`` (1-based count of recorded epochs) to the running statistics."""
  stats = dict(stats)
  if 'top_prob' in values:
    x, mean = values['top_prob'], stats['prob_mean']
    delta = x - mean
    mean = mean + delta / n
    stats['prob_mean'], stats['prob_m2'] = mean, stats['prob_m2'] + delta * (x - mean)
  if 'margin' in values:
    stats['margin_sum'] = stats['margin_sum'] + values['margin']
  return stats


def epoch_begin(setup: TrainSetup, state: TrainState, labeled: Array, num_labeled: Array,
                key: Array):
  """Sets the epoch's learning rate and shuffles the labeled prefix (padding sorts last).

  Returns (state, shuffled ids, (step key, pool key), learning rate, zero sums).
  """
  k_shuffle, k_steps, k_pool = jax.random.split(jax.random.fold_in(key, state.epoch), 3)
  lr = lr_for_epoch(setup.train_cfg, state.epoch)
  state = state.replace(opt_state=state.opt_state._replace(
      hyperparams={**state.opt_state.hyperparams, 'learning_rate': lr}))
  cap = labeled.shape[0]
  valid = jnp.arange(cap) < num_labeled
  order = jnp.argsort(jnp.where(valid, jax.random.uniform(k_shuffle, (cap,)), 2.0))
  return state, labeled[order], (k_steps, k_pool), lr, StepSums.zeros()


def epoch_step(setup: TrainSetup, step: Array, state: TrainState, sums: StepSums,
               data: DeviceData, shuffled: Array, num_labeled: Array, k_steps: Array):
  """Optimizer step ``step`` of the epoch on slice ``step`` of the shuffled labeled ids."""
  b = setup.batch_size
  idx = jax.lax.dynamic_slice(shuffled, (step * b,), (b,))
  mask = step * b + jnp.arange(b) < num_labeled
  idx, mask = parallel.constrain(idx, setup.mesh), parallel.constrain(mask, setup.mesh)
  state, m = train_step(setup, state, data, idx, mask, jax.random.fold_in(k_steps, step))
  bad = ~jnp.isfinite(m.loss)
  if setup.aux is not None:
    bad = bad | ~jnp.isfinite(m.aux)
  first_bad = jnp.where((sums.first_bad_step < 0) & bad, step, sums.first_bad_step)
  return state, StepSums(sums.loss + m.loss, sums.correct + m.correct, sums.count + m.count,
                         first_bad, sums.aux + m.aux)


def epoch_end(setup: TrainSetup, state: TrainState, history: Array, stats: dict, sums: StepSums,
              data: DeviceData, pool: Array, num_pool: Array, k_pool: Array, lr: Array,
              num_steps: Array) -> tuple[TrainState, Array, dict, EpochMetrics]:
  """On recorded epochs, scores the pool into the history (and the running statistics);
  returns the epoch's metrics."""
  if setup.recording.num_rows:
    _, recorded = setup.recording.slot(state.epoch)
    history, stats = jax.lax.cond(
        recorded, lambda h, s: record_pool(setup, state, data, h, s, pool, num_pool, k_pool),
        lambda h, s: (h, s), history, stats)
  finite = jnp.isfinite(sums.loss)
  aux_loss = jnp.float32(jnp.nan)
  if setup.aux is not None:
    finite = finite & jnp.isfinite(sums.aux)
    aux_loss = sums.aux / jnp.maximum(num_steps, 1)
  metrics = EpochMetrics(loss=sums.loss / sums.count, train_accuracy=sums.correct / sums.count,
                         steps=num_steps, learning_rate=lr, finite=finite,
                         first_bad_step=sums.first_bad_step, aux_loss=aux_loss)
  return state.replace(epoch=state.epoch + 1), history, stats, metrics


def train_epoch(setup: TrainSetup, state: TrainState, history: Array, stats: dict,
                data: DeviceData, labeled: Array, num_labeled: Array, pool: Array,
                num_pool: Array, key: Array):
  """One epoch over the labeled set, then (on recorded epochs) one pass over the pool.

  Returns the new state (``epoch`` + 1), the history, the running statistics (``{}`` unless
  the setup records some) and the epoch's :class:`EpochMetrics`.
  """
  return _fused_epoch((epoch_begin, epoch_step, epoch_end), setup, state, history, stats, data,
                      labeled, num_labeled, pool, num_pool, key)


def _fused_epoch(steps, setup: TrainSetup, state, history: Array, stats: dict, data: DeviceData,
                 labeled: Array, num_labeled: Array, pool: Array, num_pool: Array, key: Array):
  """``begin``, ``step`` x the epoch's batches (an on-device loop), ``end``: one epoch of the
  single model (``epoch_begin/step/end``) or of every member (``members_epoch_*``)."""
  begin, step_fn, end = steps
  state, shuffled, (k_steps, k_pool), lr, sums = begin(setup, state, labeled, num_labeled, key)
  num_steps = (num_labeled + setup.batch_size - 1) // setup.batch_size

  def step(s, carry):
    return step_fn(setup, s, *carry, data, shuffled, num_labeled, k_steps)

  state, sums = jax.lax.fori_loop(0, num_steps, step, (state, sums))
  return end(setup, state, history, stats, sums, data, pool, num_pool, k_pool, lr, num_steps)


def evaluate(setup: TrainSetup, state: TrainState, data: DeviceData) -> dict:
  """``{'accuracy': top-1 accuracy, 'class_correct': [C] hits per true class}`` on the test
  split (eval mode, no augmentation)."""
  v = variables(state)
  return _test_accuracy(setup, data, lambda x: jnp.argmax(
      setup.model.apply(v, x, train=False), -1))


def _test_accuracy(setup: TrainSetup, data: DeviceData, predict) -> dict:
  """:func:`evaluate`'s metrics of ``predict`` (normalised test images -> predicted labels),
  over the test split in chunks."""
  n = data.test_labels.shape[0]
  cap = parallel.round_up(n, setup.chunk)

  def correct(idx, valid):
    return (predict(model_inputs(setup, data, idx, train_split=False))
            == data.test_labels[idx]) & valid

  idx = jnp.minimum(jnp.arange(cap), n - 1)
  hits = parallel.map_in_chunks(correct, idx, jnp.int32(n), setup.chunk, setup.mesh)
  class_correct = jax.ops.segment_sum(hits[:n].astype(jnp.int32), data.test_labels,
                                      num_segments=setup.num_classes)
  return {'accuracy': hits.sum() / n, 'class_correct': class_correct}


# ---- deep ensembles: K members trained as one program ------------------------------------------
#
# With ``setup.members = K > 1`` the round trains K independent models (Lakshminarayanan et al.,
# NeurIPS 2017; Beluch et al., CVPR 2018): a TrainState whose every leaf has a leading member axis
# ``[K, ...]``, stepped by ``jax.vmap`` of the single-model steps inside the same compiled
# functions. Member ``m`` gets its own initialisation and its own shuffle, augmentation and
# dropout keys: the single model's keys folded with ``m`` (:func:`member_keys`), so member ``m`` is
# exactly the single model trained with those keys. The batch axis stays split over ``data``; the
# member axis is replicated (every device holds every member, as it holds the single model).
# The epoch's metrics are the members' mean loss and accuracy (finite only when all are), and a
# recorded prediction history (``dispersion.record_always``) is member 0's. K = 1 never takes
# this path: the single model's steps are compiled as before.

def member_keys(key: Array, members: int) -> Array:
  """``[members]`` keys: ``fold_in(key, m)`` for member ``m``."""
  return jax.vmap(jax.random.fold_in, (None, 0))(key, jnp.arange(members))


def init_members(setup: TrainSetup, key: Array) -> TrainState:
  """``setup.members`` freshly initialised models, stacked (member ``m``: ``fold_in(key, m)``)."""
  return jax.vmap(functools.partial(init_state, setup))(member_keys(key, setup.members))


def members_epoch_begin(setup: TrainSetup, states: TrainState, labeled: Array,
                        num_labeled: Array, key: Array):
  """:func:`epoch_begin` of every member, each with its own key (its own data order)."""
  return jax.vmap(functools.partial(epoch_begin, setup), in_axes=(0, None, None, 0))(
      states, labeled, num_labeled, member_keys(key, setup.members))


def members_epoch_step(setup: TrainSetup, step: Array, states: TrainState, sums: StepSums,
                       data: DeviceData, shuffled: Array, num_labeled: Array, k_steps: Array):
  """:func:`epoch_step` of every member (``shuffled``, ``k_steps``: per member)."""
  def one(state, s, order, k):
    return epoch_step(setup, step, state, s, data, order, num_labeled, k)
  return jax.vmap(one)(states, sums, shuffled, k_steps)


def _mean_metrics(m: EpochMetrics) -> EpochMetrics:
  """One epoch's metrics of the ensemble from the members' ``[K]`` metrics."""
  big = jnp.iinfo(jnp.int32).max
  first_bad = jnp.where(m.first_bad_step >= 0, m.first_bad_step, big).min()
  return EpochMetrics(loss=m.loss.mean(), train_accuracy=m.train_accuracy.mean(),
                      steps=m.steps[0], learning_rate=m.learning_rate[0],
                      finite=m.finite.all(), first_bad_step=jnp.where(first_bad == big, -1,
                                                                      first_bad),
                      aux_loss=m.aux_loss.mean())


def members_epoch_end(setup: TrainSetup, states: TrainState, history: Array, stats: dict,
                      sums: StepSums, data: DeviceData, pool: Array, num_pool: Array,
                      k_pool: Array, lr: Array, num_steps: Array):
  """:func:`epoch_end` of every member; a recorded history (and statistics) is member 0's."""
  if setup.recording.num_rows:
    first = jax.tree.map(lambda x: x[0], states)
    _, recorded = setup.recording.slot(first.epoch)
    history, stats = jax.lax.cond(
        recorded, lambda h, s: record_pool(setup, first, data, h, s, pool, num_pool, k_pool[0]),
        lambda h, s: (h, s), history, stats)
  quiet = dataclasses.replace(setup, recording=dataclasses.replace(setup.recording,
                                                                   enabled=False))

  def one(state, s, k, rate):
    state, _, _, metrics = epoch_end(quiet, state, history, {}, s, data, pool, num_pool, k, rate,
                                     num_steps)
    return state, metrics

  states, metrics = jax.vmap(one)(states, sums, k_pool, lr)
  return states, history, stats, _mean_metrics(metrics)


def members_train_epoch(setup: TrainSetup, states: TrainState, history: Array, stats: dict,
                        data: DeviceData, labeled: Array, num_labeled: Array, pool: Array,
                        num_pool: Array, key: Array):
  """:func:`train_epoch` of every member, vmapped in one program (device step loop)."""
  return _fused_epoch((members_epoch_begin, members_epoch_step, members_epoch_end), setup,
                      states, history, stats, data, labeled, num_labeled, pool, num_pool, key)


def member_probs(setup: TrainSetup, states: TrainState, x: Array) -> Array:
  """``[K, n, C]`` softmax probabilities of every member on the normalised images ``x``."""
  logits = jax.vmap(lambda v: setup.model.apply(v, x, train=False))(variables(states))
  return jax.nn.softmax(logits.astype(jnp.float32))


def evaluate_members(setup: TrainSetup, states: TrainState, data: DeviceData) -> dict:
  """:func:`evaluate` of the ensemble's prediction: the argmax of the members' mean probability
  (at most ``[K, chunk, C]`` at a time)."""
  return _test_accuracy(setup, data,
                        lambda x: jnp.argmax(member_probs(setup, states, x).mean(0), -1))


# ---- compiled steps of a run --------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Steps:
  """The jitted steps of one :class:`TrainSetup` (compiled once, reused by every round)."""
  init: Callable  # (key) -> TrainState
  empty_history: Callable  # (pool_capacity) -> history, split along the pool
  # (state, history, stats, data, labeled, n, pool, n_pool, key) -> (state, history, stats, m)
  train_epoch: Callable
  evaluate: Callable  # (state, data) -> {'accuracy', 'class_correct'}
  empty_stats: Callable  # (pool_capacity) -> {field: float32 [pool_capacity]}, split


def compile_steps(setup: TrainSetup) -> Steps:
  """Jits the steps of ``setup``; on CPU the epoch's step loop is dispatched from Python.

  With ``setup.members > 1`` the state is the stacked ensemble (``init`` takes one key and folds
  in the member index) and the epoch trains every member; the signatures are the same.
  """
  mesh = setup.mesh
  ensemble = setup.members > 1
  init = jax.jit(functools.partial(init_members if ensemble else init_state, setup),
                 out_shardings=parallel.replicated(mesh))
  history = jax.jit(functools.partial(empty_history, setup), static_argnums=(0,),
                    out_shardings=history_sharding(setup))
  stats = jax.jit(functools.partial(empty_stats, setup), static_argnums=(0,),
                  out_shardings=parallel.sharded(mesh, 1))
  if setup.step_loop == 'device':
    epoch = jax.jit(functools.partial(members_train_epoch if ensemble else train_epoch, setup),
                    donate_argnums=(0, 1, 2))
  elif ensemble:
    epoch = _host_loop_epoch(setup, members_epoch_begin, members_epoch_step, members_epoch_end)
  else:
    epoch = _host_loop_epoch(setup)
  evaluate_fn = evaluate_members if ensemble else evaluate
  return Steps(init, history, epoch, jax.jit(functools.partial(evaluate_fn, setup)), stats)


def _host_loop_epoch(setup: TrainSetup, begin_fn=epoch_begin, step_fn=epoch_step,
                     end_fn=epoch_end) -> Callable:
  """:func:`train_epoch` with the step loop in Python: three compiled functions (begin, step,
  end) dispatched asynchronously; nothing but the step count is read back. (The ensemble passes
  its ``members_*`` versions.)"""
  begin = jax.jit(functools.partial(begin_fn, setup), donate_argnums=(0,))
  step = jax.jit(functools.partial(step_fn, setup), donate_argnums=(1, 2))
  end = jax.jit(functools.partial(end_fn, setup), donate_argnums=(0, 1, 2))
  # Several (simulated) CPU devices: wait for each step before dispatching the next. With
  # several collective programs in flight on busy cores, XLA:CPU's rendezvous can deadlock.
  one_at_a_time = setup.mesh.devices.flat[0].platform == 'cpu' and setup.mesh.size > 1

  def epoch(state, history, stats, data, labeled, num_labeled, pool, num_pool, key):
    n = int(num_labeled)
    state, shuffled, (k_steps, k_pool), lr, sums = begin(state, labeled, num_labeled, key)
    num_steps = -(-n // setup.batch_size)
    for s in range(num_steps):
      state, sums = step(jnp.int32(s), state, sums, data, shuffled, num_labeled, k_steps)
      if one_at_a_time:
        jax.block_until_ready(sums)
    out = end(state, history, stats, sums, data, pool, num_pool, k_pool, lr,
              jnp.int32(num_steps))
    if one_at_a_time:
      jax.block_until_ready(out)
    return out

  return epoch
