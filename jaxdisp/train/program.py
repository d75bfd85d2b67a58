"""A run's training program: its static setup from the config (:func:`make_setup`), the single
model's epoch (:func:`train_epoch`), and the jitted steps of a run (:func:`compile_steps`)."""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import Mesh

from jaxdisp import models, parallel
from jaxdisp.errors import ConfigError
from jaxdisp.input_pipeline import DeviceData
from jaxdisp.train import loop, recording, steps
from jaxdisp.train.aux_head import AuxHead, with_aux_head
from jaxdisp.train.members import (evaluate_members, init_members, members_epoch_begin,
                                   members_epoch_end, members_epoch_step, members_train_epoch,
                                   resolve_member_map)
from jaxdisp.train.state import TrainSetup, TrainState, init_state, make_optimizer

Array = jax.Array


def make_setup(cfg, mesh: Mesh, image_shape, num_classes: int, record: bool,
               stats: tuple = (), members: int = 1, aux: AuxHead | None = None) -> TrainSetup:
  """The :class:`TrainSetup` of a config; ``record``: whether epochs record the pool's
  predicted labels; ``stats``: running statistics (kinds of ``recording.STATS``) recorded with
  them; ``members``: models trained together (``Strategy.members``); ``aux``: an auxiliary head
  trained alongside the task model (``Strategy.aux_head``), or None."""
  d = mesh.size
  t = cfg.train
  if t.batch_size % d:
    raise ConfigError(f'train.batch_size={t.batch_size} must be a multiple of the '
                      f'{d} devices')
  vectors = len(tuple(image_shape)) == 1  # feature vectors [N, D] (data.is_vector_shape)
  models.check_config(cfg.model, vectors, f'the dataset (samples of shape {tuple(image_shape)})')
  if vectors and (t.augment or cfg.dispersion.augmented_views):
    raise ConfigError('image augmentation (train.augment, dispersion.augmented_views) does not '
                      'apply to feature vectors: set both to False')
  if aux is not None and int(members) > 1:
    raise ConfigError(f'an auxiliary head (strategy={cfg.strategy}) cannot be trained with '
                      f'{members} ensemble members; use one')
  model = models.create_model(cfg.model, num_classes)
  if aux is not None:
    model = with_aux_head(model, aux.module)
  return TrainSetup(
      model=model, tx=make_optimizer(t), mesh=mesh,
      train_cfg=ml_collections.FrozenConfigDict(t), image_shape=tuple(image_shape),
      num_classes=num_classes, chunk=parallel.round_up(t.eval_batch_size, d),
      recording=recording.Recording.from_config(cfg, record, stats),
      shard_train=shards_train_images(cfg),
      compute_dtype=jnp.bfloat16 if cfg.model.dtype == 'bfloat16' else jnp.float32,
      step_loop=step_loop(cfg, mesh), members=int(members), aux=aux,
      member_map=member_map(cfg, mesh))


def shards_train_images(cfg) -> bool:
  """``dataset.placement``: ``sharded``, ``replicated``, or ``auto`` = sharded when the run has
  several processes (each host then loads only its devices' rows)."""
  placement = cfg.dataset.placement
  return placement == 'sharded' or (placement == 'auto' and jax.process_count() > 1)


def step_loop(cfg, mesh: Mesh) -> str:
  """Where the epoch's step loop runs (``loop.py``): ``device`` (one call per epoch) or
  ``host``. ``auto``: host for the image models on CPU (XLA:CPU runs conv gradients far slower
  inside loops), device otherwise -- the heads for feature vectors have no convolution, and one
  call per epoch removes the per-step dispatch that dominates their tiny steps."""
  if cfg.train.step_loop != 'auto':
    return cfg.train.step_loop
  on_cpu = mesh.devices.flat[0].platform == 'cpu'
  return 'host' if on_cpu and cfg.model.name not in models.VECTOR_MODELS else 'device'


def member_map(cfg, mesh: Mesh) -> str:
  """How members (``members > 1``) are mapped: ``train.member_map``, ``auto`` resolved for the
  mesh's platform."""
  return resolve_member_map(cfg.train.member_map, mesh.devices.flat[0].platform)


SINGLE = (steps.epoch_begin, steps.epoch_step, recording.epoch_end)
MEMBERS = (members_epoch_begin, members_epoch_step, members_epoch_end)


def train_epoch(setup: TrainSetup, state: TrainState, history: Array, stats: dict,
                data: DeviceData, labeled: Array, num_labeled: Array, pool: Array,
                num_pool: Array, key: Array):
  """One epoch over the labeled set, then (on recorded epochs) one pass over the pool, as one
  program (device step loop).

  Returns the new state (``epoch`` + 1), the history, the running statistics (``{}`` unless
  the setup records some) and the epoch's ``metrics.EpochMetrics``.
  """
  return loop.epoch_on_device(SINGLE, setup, state, history, stats, data, labeled, num_labeled,
                              pool, num_pool, key)


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
  """Jits the steps of ``setup``; on the host step loop the epoch's steps are dispatched from
  Python (``loop.epoch_on_host``).

  With ``setup.members > 1`` the state is the members' stacked state (``init`` takes one key and
  folds in the member index) and the epoch trains every member; the signatures are the same.
  """
  mesh = setup.mesh
  several = setup.members > 1
  init = jax.jit(functools.partial(init_members if several else init_state, setup),
                 out_shardings=parallel.replicated(mesh))
  history = jax.jit(functools.partial(recording.empty_history, setup), static_argnums=(0,),
                    out_shardings=recording.history_sharding(setup))
  stats = jax.jit(functools.partial(recording.empty_stats, setup), static_argnums=(0,),
                  out_shardings=parallel.sharded(mesh, 1))
  if setup.step_loop == 'device':
    fused = members_train_epoch if several else train_epoch
    epoch = jax.jit(functools.partial(fused, setup), donate_argnums=(0, 1, 2))
  else:
    epoch = loop.epoch_on_host(MEMBERS if several else SINGLE, setup)
  evaluate = evaluate_members if several else steps.evaluate
  return Steps(init, history, epoch, jax.jit(functools.partial(evaluate, setup)), stats)
