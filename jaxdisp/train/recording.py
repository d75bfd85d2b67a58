"""Recording the pool during training: the prediction history and the running statistics.

On recorded epochs (:class:`Recording`) the end of the epoch (:func:`epoch_end`) makes one
eval-mode pass over the unlabeled pool (:func:`record_pool`) that writes each sample's predicted
label into row ``t`` of the device-resident ``[T, P]`` prediction history and, when the strategy
asks, updates running per-sample statistics of the same logits (:data:`STATS`; the training
dynamics scores). History and statistics are split along the pool and donated: updated in place.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding

from jaxdisp import parallel
from jaxdisp.input_pipeline import DeviceData
from jaxdisp.train import metrics, steps
from jaxdisp.train.state import TrainSetup, TrainState, variables

Array = jax.Array

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


def history_dtype(num_classes: int):
  return jnp.int8 if num_classes <= 127 else jnp.int16


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
    logits = setup.model.apply(v, steps.model_inputs(setup, data, idx, keys), train=False)
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


def record_epoch(setup: TrainSetup, state: TrainState, data: DeviceData, history: Array,
                 stats: dict, pool: Array, num_pool: Array, key: Array) -> tuple[Array, dict]:
  """:func:`record_pool` when ``state.epoch`` is a recorded epoch (a traced condition), else the
  history and statistics unchanged."""
  if not setup.recording.num_rows:
    return history, stats
  _, recorded = setup.recording.slot(state.epoch)
  return jax.lax.cond(
      recorded, lambda h, s: record_pool(setup, state, data, h, s, pool, num_pool, key),
      lambda h, s: (h, s), history, stats)


def epoch_end(setup: TrainSetup, state: TrainState, history: Array, stats: dict,
              sums: metrics.StepSums, data: DeviceData, pool: Array, num_pool: Array,
              k_pool: Array, lr: Array,
              num_steps: Array) -> tuple[TrainState, Array, dict, metrics.EpochMetrics]:
  """On recorded epochs, scores the pool into the history (and the running statistics);
  returns the epoch's metrics."""
  history, stats = record_epoch(setup, state, data, history, stats, pool, num_pool, k_pool)
  return (state.replace(epoch=state.epoch + 1), history, stats,
          metrics.epoch_metrics(sums, lr, num_steps))
