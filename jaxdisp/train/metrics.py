"""An epoch's training metrics: the running sums of its steps (:class:`StepSums`), the metrics
read back after it (:class:`EpochMetrics`), and the policy that stops a run on NaN/inf or a
diverged loss (:func:`epoch_problem`)."""

from __future__ import annotations

import dataclasses
import functools
import math
import operator

import flax
import jax
import jax.numpy as jnp

Array = jax.Array


@flax.struct.dataclass
class StepSums:
  """Running sums over an epoch's optimizer steps."""
  loss: Array  # sum of loss x real samples
  correct: Array
  count: Array  # real (unpadded) samples
  first_bad_step: Array  # first step whose loss was NaN/inf, -1 = none
  aux: dict  # {name: sum over steps} of the objective's other loss terms (``Objective.terms``)

  @classmethod
  def zeros(cls, terms: tuple[str, ...] = ()) -> 'StepSums':
    return cls(jnp.float32(0), jnp.float32(0), jnp.float32(0), jnp.int32(-1),
               {name: jnp.float32(0) for name in terms})

  def add(self, step: int | Array, other: 'StepSums') -> 'StepSums':
    """These sums plus those of optimizer step ``step`` (its ``first_bad_step`` is ignored)."""
    bad = ~all_finite(other.loss, other.aux)
    first_bad = jnp.where((self.first_bad_step < 0) & bad, step, self.first_bad_step)
    return StepSums(self.loss + other.loss, self.correct + other.correct,
                    self.count + other.count, first_bad,
                    jax.tree.map(operator.add, self.aux, other.aux))


def all_finite(*trees) -> Array:
  """True when every leaf of ``trees`` is finite (scalars)."""
  return functools.reduce(operator.and_, [jnp.isfinite(x) for x in jax.tree.leaves(trees)])


@flax.struct.dataclass
class EpochMetrics:
  """One epoch's training metrics (device scalars; the caller decides what to read back)."""
  loss: Array
  train_accuracy: Array
  steps: Array
  learning_rate: Array
  finite: Array  # False when any step's loss was NaN/inf
  first_bad_step: Array
  # the epoch's mean auxiliary-head loss per step (``aux_head.AuxHead``: Learning Loss's ranking
  # loss); nan when the model has no auxiliary head
  aux_loss: Array = float('nan')

  def to_host(self) -> dict:
    """Every metric as a Python number, in one device-to-host transfer."""
    host = jax.device_get(self)
    return {f.name: getattr(host, f.name).item() for f in dataclasses.fields(self)}


def epoch_metrics(sums: StepSums, lr: Array, num_steps: Array) -> EpochMetrics:
  """The metrics of an epoch of ``num_steps`` steps at learning rate ``lr``."""
  aux = {name: total / jnp.maximum(num_steps, 1) for name, total in sums.aux.items()}
  return EpochMetrics(loss=sums.loss / sums.count, train_accuracy=sums.correct / sums.count,
                      steps=num_steps, learning_rate=lr, finite=all_finite(sums.loss, sums.aux),
                      first_bad_step=sums.first_bad_step,
                      aux_loss=aux.get('aux_loss', jnp.float32(jnp.nan)))


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
