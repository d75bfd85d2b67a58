"""Training state and optimizer: the pytree a round trains (:class:`TrainState`), its static
half (:class:`TrainSetup`), the SGD optimizer and its step schedule, a freshly initialised model,
and the fixed-capacity index buffers the compiled steps read the labeled set and the pool from."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from jaxdisp import parallel
from jaxdisp.train import task_loss

if TYPE_CHECKING:
  from jaxdisp.train.aux_head import AuxHead
  from jaxdisp.train.recording import Recording

Array = jax.Array


@flax.struct.dataclass
class TrainState:
  """Everything that changes during a round's training (a pytree; checkpointed by orbax)."""
  epoch: Array  # int32: epochs completed
  params: Any
  batch_stats: Any
  opt_state: Any


@dataclasses.dataclass(frozen=True)
class TrainSetup:
  """The static half of training: what the compiled steps close over (hashable, no arrays)."""
  model: nn.Module
  tx: optax.GradientTransformation
  mesh: Mesh
  train_cfg: Any  # the frozen ``train`` config group (schedule, batch size, augmentation)
  image_shape: tuple  # one sample: (H, W, C) for images, (D,) for feature vectors
  num_classes: int
  chunk: int  # pool/eval chunk, a multiple of the device count
  recording: Recording  # which epochs record the pool, and what
  shard_train: bool  # training images split over ``data`` (dataset.placement)
  compute_dtype: Any
  step_loop: str  # 'device' | 'host'
  # K > 1 independent models trained as one program, their states stacked on a leading member
  # axis (``members.py``; ``Strategy.members``); 1 = the single model.
  members: int = 1
  member_map: str = 'vmap'  # how the members' steps run: 'vmap' | 'map' (``members.py``)
  aux: AuxHead | None = None  # an auxiliary head (``Strategy.aux_head``), or None

  @property
  def batch_size(self) -> int:
    return self.train_cfg.batch_size

  @property
  def objective(self):
    """What each training step minimises: the task loss, or the auxiliary head's loss wrapped
    around it (both :class:`task_loss.Objective`)."""
    return task_loss.TASK_LOSS if self.aux is None else self.aux


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


def init_state(setup: TrainSetup, key: Array) -> TrainState:
  """A freshly initialised model and optimizer (epoch 0)."""
  dummy = jnp.zeros((1, *setup.image_shape), setup.compute_dtype)
  variables = setup.model.init(key, dummy, train=False)
  params = variables['params']
  return TrainState(epoch=jnp.int32(0), params=params,
                    batch_stats=variables.get('batch_stats', {}),
                    opt_state=setup.tx.init(params))


def variables(state: TrainState) -> dict:
  return {'params': state.params, 'batch_stats': state.batch_stats}
