"""Learning Loss for Active Learning (Yoo & Kweon, CVPR 2019, arXiv:1905.03677).

A small loss-prediction module on the task model's intermediate features learns, next to the task
loss, to rank samples by their loss; the query is the ``budget`` pool samples with the **highest**
predicted loss. Followed: the paper and the authors'-style reference code
(github.com/Mephisto405/Learning-Loss-for-Active-Learning, ``models/lossnet.py``, ``main.py``):

* **Module** (:class:`LossNet`): for each stage output of the backbone (the 4 ResNet stages; the
  small CNN's 3 conv-BN-ReLU blocks, before their pooling) a global average pool, a Dense layer
  of ``learning_loss.hidden`` (128) units and a ReLU; the concatenation goes through a Dense(1):
  the predicted loss of each sample. On feature vectors (``model.name=mlp``) the stages are the
  MLP's hidden layers ``[B, model.hidden]``, taken as they are (nothing to pool); a linear head
  (``model.name=linear``) has no hidden layer to attach to, and is refused.
* **Loss** (:func:`loss_pred_loss`, the reference's ``LossPredLoss``, reduction ``mean``): the
  batch is paired with its own reverse (sample i with sample B-1-i, i < B/2); for each pair the
  predicted-loss difference ``d = l_i - l_j`` is pushed to agree in sign with the (gradient-free)
  true-loss difference ``t = L_i - L_j`` by a margin: ``max(0, margin - s d)``, ``s = 2
  sign(max(t, 0)) - 1`` (``+1`` when ``t > 0``, else ``-1``: ties count as ``-1``, as in the
  reference), averaged over the pairs. ``learning_loss.margin`` = 1.
* **Joint training**: each step minimises ``mean CE + lambda * loss-prediction loss``
  (``lambda = learning_loss.weight`` = 1), the module trained by the same optimizer as the task
  model (the reference gives it its own SGD with the same learning rate, schedule, momentum and
  weight decay; here it is one optimizer over both parameter sets, the same update). Later in
  training the features reach the module **detached**: the module keeps learning, the backbone no
  longer learns from it (the reference: after epoch 120 of 200).
* **Query**: the final model's predicted loss on every pool sample (eval mode), highest first.

Adapted for jaxdisp:

* **Padded batches.** jaxdisp's batches have a fixed shape; the last one of an epoch is padded,
  with a mask of the real rows. Pairs are formed among the real rows only (real row i with real
  row n-1-i, n real rows), so a padded batch gives exactly the loss of the same rows unpadded;
  the mean is over the ``max(1, floor(n / 2))`` real pairs. With an odd n the middle sample has no
  partner (the reference asserts an even batch; it never sees an odd one at its sizes). Padding
  rows never reach the task loss or BatchNorm either (``jaxdisp/train/``).
* **Detach epoch** as a fraction of ``train.epochs``: the features are detached in every epoch
  ``e >= round(learning_loss.detach_after * train.epochs)`` (0-based; 0.6 x 200 = 120, so epochs
  120..199). The reference's ``epoch > 120`` starts one epoch later (121); 1.0 = never detached,
  0.0 = always. The switch is a traced comparison with the state's epoch: one compiled step.
* **Initialisation** of the module: Flax's defaults (LeCun-normal weights, zero biases, as the
  task model's classifier here), not PyTorch's uniform ones.
* **Fresh every round**: the task model and the module are re-initialised each round, as every
  jaxdisp strategy trains from scratch (the reference keeps both across cycles); the reference's
  scoring of a random 10,000-sample subset is ``al.pool_subset``.
* The module's parameters are ``params['aux']`` of the task model's state (``Strategy.aux_head``,
  ``train.AuxHead``): trained by its optimizer, saved in its training checkpoints, so a run killed
  mid-round resumes to the same ids. The epoch's mean loss-prediction loss is the training metric
  ``aux_loss`` (TensorBoard ``train/aux_loss``).

Cost: one training (the module adds a few small matrix products per step) and one pool pass after
training, which gives the features and the predicted loss together.
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdisp import train
from jaxdisp.errors import ConfigError
from jaxdisp.strategies import base

Array = jax.Array


class LossNet(nn.Module):
  """The loss-prediction module: per stage GAP -> Dense(hidden) -> ReLU; concat -> Dense(1)."""
  hidden: int = 128

  @nn.compact
  def __call__(self, stages) -> Array:
    if not stages:
      raise ConfigError('the loss-prediction module needs stage outputs; this backbone has none '
                        '(model.name=linear has no hidden layer: use model.name=mlp)')
    parts = [nn.relu(nn.Dense(self.hidden, name=f'fc{i}')(_pooled(s)))
             for i, s in enumerate(stages)]
    return nn.Dense(1, name='out')(jnp.concatenate(parts, -1))[:, 0]


def _pooled(stage: Array) -> Array:
  """``[B, F]`` float32: a stage ``[B, H, W, C]`` averaged over its positions (global average
  pooling); a hidden layer's ``[B, F]`` as it is."""
  stage = stage.astype(jnp.float32)
  return stage if stage.ndim == 2 else jnp.mean(stage, axis=tuple(range(1, stage.ndim - 1)))


def loss_pred_loss(pred: Array, target: Array, mask: Array | None = None,
                   margin: float = 1.0) -> Array:
  """The reference's ``LossPredLoss(pred, target, margin)`` (reduction ``mean``) over the real
  rows of a padded batch (``mask``; None = all real): real row i is paired with real row n-1-i
  (n real rows; the batch's own reverse when nothing is padded), ``target`` carries no gradient,
  and the sum of ``max(0, margin - s (l_i - l_j))`` is divided by the ``max(1, n // 2)`` pairs."""
  b = pred.shape[0]
  if mask is None:
    mask = jnp.ones((b,), bool)
  mask = mask.astype(bool)
  # real rows first, in their order (unique keys: the same order whatever the sort or sharding)
  order = jnp.argsort(jnp.where(mask, 0, b) + jnp.arange(b))
  p, t = pred[order], jax.lax.stop_gradient(target)[order]
  n = mask.sum()
  i = jnp.arange(b // 2)
  j = jnp.clip(n - 1 - i, 0, b - 1)
  pair = i < n // 2
  d_pred, d_true = p[i] - p[j], t[i] - t[j]
  one = 2.0 * jnp.sign(jnp.maximum(d_true, 0.0)) - 1.0
  per_pair = jnp.maximum(margin - one * d_pred, 0.0)
  return jnp.where(pair, per_pair, 0.0).sum() / jnp.maximum(pair.sum(), 1).astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class RankingLoss:
  """``AuxHead.loss``: :func:`loss_pred_loss` with a fixed margin (hashable, equal by value)."""
  margin: float = 1.0

  def __call__(self, pred: Array, target: Array, mask: Array) -> Array:
    return loss_pred_loss(pred, target, mask, self.margin)


def detach_epoch(cfg) -> int:
  """The first (0-based) epoch whose features reach the module detached."""
  return int(round(cfg.learning_loss.detach_after * cfg.train.epochs))


def aux_head(cfg) -> train.AuxHead:
  ll = cfg.learning_loss
  return train.AuxHead(module=LossNet(hidden=int(ll.hidden)),
                       loss=RankingLoss(float(ll.margin)), weight=float(ll.weight),
                       detach_epoch=detach_epoch(cfg))


def _predicted_loss(c: base.ChunkInputs) -> Array:
  if c.aux is None:
    raise ValueError("pool output 'predicted_loss' needs a model with a loss-prediction head "
                     '(Strategy.aux_head)')
  return c.aux


base.register_output('predicted_loss', _predicted_loss)


def score(view: base.PoolView) -> Array:
  return view.outputs['predicted_loss']


CONFIG = dict(  # the learning_loss group: cfg.learning_loss
    weight=1.0,  # lambda: total loss = mean CE + weight * loss-prediction loss
    margin=1.0,  # margin of the pairwise ranking loss
    # from epoch round(detach_after * train.epochs) on (0-based) the loss module sees the stage
    # features without gradient (the authors: after epoch 120 of 200); 1 = never detached
    detach_after=0.6,
    hidden=128,  # units of each stage's Dense layer (the paper's 128)
)


def check_config(cfg) -> None:
  """The module attaches to hidden layers: a linear head on feature vectors has none."""
  if cfg.model.name == 'linear':
    raise ConfigError('strategy=learning_loss attaches its loss-prediction module to the '
                      "model's hidden layers, and model.name=linear has none: use "
                      'model.name=mlp (model.depth >= 1 hidden layers)')


def check_group(cfg) -> None:
  ll = cfg.learning_loss

  def need(ok, msg):
    if not ok:
      raise ConfigError(msg)

  def number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

  need(number(ll.weight) and ll.weight >= 0,
       f'learning_loss.weight={ll.weight!r} must be a finite number >= 0')
  need(number(ll.margin) and ll.margin >= 0,
       f'learning_loss.margin={ll.margin!r} must be a finite number >= 0')
  need(number(ll.detach_after) and 0.0 <= ll.detach_after <= 1.0,
       f'learning_loss.detach_after={ll.detach_after!r} must be in [0, 1] (a fraction of '
       'train.epochs; 1 = never detach)')
  need(isinstance(ll.hidden, int) and not isinstance(ll.hidden, bool) and ll.hidden >= 1,
       f'learning_loss.hidden={ll.hidden!r} must be an integer >= 1')


STRATEGY = base.register(base.Strategy(
    name='learning_loss', summary='highest loss predicted by a loss-prediction module trained '
    'with the task model on its stage features (margin ranking loss)',
    reference='Yoo & Kweon, CVPR 2019 (authors\'-style code Mephisto405/Learning-Loss-for-'
    'Active-Learning; pairs among the real rows of padded batches, detach epoch as a fraction '
    'of train.epochs, one optimizer for both, re-initialised every round)',
    cost='1 training (with the loss-prediction module) + 1 pool pass (after training)',
    outputs=('predicted_loss',), score=score, config=CONFIG, check_group=check_group,
    check_config=check_config, aux_head=aux_head), builtin=True)
