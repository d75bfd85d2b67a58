"""The auxiliary head: a module trained alongside the task model, declared by a strategy
(``Strategy.aux_head(cfg)``; Learning Loss's loss-prediction module is one).

The classifier is built with the head on the backbone's stage outputs
(:class:`ClassifierWithAux`): its parameters are ``params['aux']`` next to the task model's, so
the task model's optimizer trains them and its checkpoints keep them. :class:`AuxHead` is the
objective of such a model (``task_loss.Objective``): the task loss wrapped with the head's own
term, ``mean task loss + weight * loss(head output, per-sample task losses, mask)``. The training
step is the same with and without a head (``steps.train_step``); the epoch's mean head loss is
the training metric ``aux_loss``.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdisp import models
from jaxdisp.train import task_loss

Array = jax.Array


class ClassifierWithAux(models.Classifier):
  """A ``models.Classifier`` with an auxiliary head ``aux`` on the backbone's stage outputs (a
  tuple of ``[B, H, W, C]`` for the image models, of ``[B, F]`` for the MLP's hidden layers)
  giving one value per sample ``[B]``. ``__call__`` is the
  classifier's (it only creates the head at ``init``); ``train_with_aux`` and ``embed_aux`` run
  the head. The task model's parameters are those of the same classifier without the head."""
  aux: nn.Module

  def __call__(self, x: Array, *, train: bool, mask: Array | None = None,
               stochastic: bool | None = None) -> Array:
    stochastic = train if stochastic is None else stochastic
    features, stages = self.backbone(x, train=train, mask=mask, stochastic=stochastic,
                                     stages=True)
    if self.is_initializing():
      self.aux(stages)
    return self.head(features, deterministic=not stochastic)

  def train_with_aux(self, x: Array, *, mask: Array | None = None,
                     detach: Array | bool = False) -> tuple[Array, Array]:
    """Training mode: ``(logits, aux output [B] float32)``. ``detach`` (may be traced): the
    stage outputs reach the auxiliary head without gradient (none flows from it into the
    backbone); the values are the same either way."""
    features, stages = self.backbone(x, train=True, mask=mask, stages=True)
    logits = self.head(features, deterministic=False)
    stages = tuple(jnp.where(detach, jax.lax.stop_gradient(s), s) for s in stages)
    return logits, self.aux(stages).astype(jnp.float32)

  def embed_aux(self, x: Array) -> tuple[Array, Array]:
    """Eval mode: (penultimate features, aux output [B]), both float32, in one forward pass."""
    features, stages = self.backbone(x, train=False, stages=True)
    return features.astype(jnp.float32), self.aux(stages).astype(jnp.float32)


def with_aux_head(model: models.Classifier, module: nn.Module) -> ClassifierWithAux:
  """``model`` (``models.create_model``) with the auxiliary head ``module`` on its stages."""
  return ClassifierWithAux(backbone=model.backbone, head=model.head, aux=module)


@dataclasses.dataclass(frozen=True)
class AuxHead:
  """An auxiliary head trained alongside the task model (hashable: it is part of the static
  ``TrainSetup``), and the objective of the model that carries it.

  ``module`` maps the backbone's stage outputs to one value per sample ``[B]``. Every step
  minimises ``mean task loss + weight * loss(aux output, per-sample task losses (no gradient),
  mask)``; ``mask`` marks the real rows of a padded batch. From epoch ``detach_epoch`` on
  (0-based; None = never) the stage outputs reach the head without gradient: it still learns,
  the backbone no longer learns from it.
  """
  module: nn.Module
  loss: Callable[[Array, Array, Array], Array]  # (aux [B], task losses [B], mask [B]) -> scalar
  weight: float = 1.0
  detach_epoch: int | None = None
  terms: ClassVar[tuple[str, ...]] = ('aux_loss',)  # ``task_loss.Terms.aux``

  def __call__(self, model: ClassifierWithAux, variables: dict, x: Array, labels: Array,
               mask: Array, epoch: Array, rng: Array) -> tuple[Array, task_loss.Terms]:
    """The ``task_loss.Objective`` of a model with this head."""
    detach = jnp.bool_(False) if self.detach_epoch is None else epoch >= self.detach_epoch
    (logits, out), updates = model.apply(variables, x, mask=mask, detach=detach,
                                         rngs={'dropout': rng}, mutable=['batch_stats'],
                                         method='train_with_aux')
    task, losses = task_loss.cross_entropy(logits, labels, mask)
    aux_loss = self.loss(out, jax.lax.stop_gradient(losses), mask)
    return (task + self.weight * aux_loss,
            task_loss.Terms(logits, updates.get('batch_stats', {}), task,
                            {'aux_loss': aux_loss}))
