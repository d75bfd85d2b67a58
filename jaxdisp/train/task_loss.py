"""The task loss, and the interface of what a training step minimises (:class:`Objective`).

A training step (``steps.train_step``) differentiates ``setup.objective``: a training-mode forward
pass of the model and a scalar loss. The task loss (:data:`TASK_LOSS`) is the classifier's
softmax cross-entropy, averaged over the real rows of a padded batch; an auxiliary head
(``aux_head.AuxHead``) is an objective that wraps it: the same cross-entropy plus its own term.
The step reads the loss terms back (:class:`Terms`) and never asks which objective it has.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, NamedTuple, Protocol

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

Array = jax.Array


class Terms(NamedTuple):
  """What an objective reports besides the loss it minimises."""
  logits: Array  # [B, C] training-mode logits
  batch_stats: Any  # the BatchNorm statistics the forward pass updated
  task: Array  # the mean task loss over the real rows
  aux: dict  # {name: scalar} of the objective's other loss terms (``Objective.terms``)


class Objective(Protocol):
  """``objective(model, variables, x, labels, mask, epoch, rng) -> (loss, Terms)``: one
  training-mode forward pass (``mask``: the real rows of a padded batch; ``rng``: the dropout
  key; ``epoch``: the state's traced epoch) and the loss to minimise. Hashable: it is part of
  the static ``TrainSetup``."""
  terms: ClassVar[tuple[str, ...]]  # the names of ``Terms.aux``, summed over an epoch's steps

  def __call__(self, model: nn.Module, variables: dict, x: Array, labels: Array, mask: Array,
               epoch: Array, rng: Array) -> tuple[Array, Terms]:
    ...


def cross_entropy(logits: Array, labels: Array, mask: Array) -> tuple[Array, Array]:
  """``(mean over the real rows, per-sample losses [B])`` of the softmax cross-entropy."""
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  weights = mask.astype(jnp.float32)
  return (losses * weights).sum() / jnp.maximum(weights.sum(), 1.0), losses


@dataclasses.dataclass(frozen=True)
class TaskLoss:
  """The task loss alone: the mean cross-entropy of the model's training-mode logits."""
  terms: ClassVar[tuple[str, ...]] = ()

  def __call__(self, model, variables, x, labels, mask, epoch, rng) -> tuple[Array, Terms]:
    del epoch
    logits, updates = model.apply(variables, x, train=True, mask=mask, rngs={'dropout': rng},
                                  mutable=['batch_stats'])
    task, _ = cross_entropy(logits, labels, mask)
    # a model without BatchNorm (the vector heads) has no batch_stats to update
    return task, Terms(logits, updates.get('batch_stats', {}), task, {})


TASK_LOSS = TaskLoss()
