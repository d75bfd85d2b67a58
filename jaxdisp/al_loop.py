"""The active-learning loop: ``ALState`` and ``al_round = train -> score -> select``.

``ALState`` is the whole experiment's state, a small pytree of host arrays:

* ``labeled_round[i]``: ``-1`` while training sample ``i`` is unlabeled, else the round whose
  model was the first to train on it (``0`` = the initial set, ``r + 1`` = queried in round
  ``r``). So the ids selected in round ``r`` are ``labeled_round == r + 1``.
* ``score``, ``modal_label``, ``label_changes``: for each queried sample, its acquisition score
  and (when a prediction history was recorded) its modal predicted label and number of label
  changes across epochs; ``nan`` / ``-1`` elsewhere.
* per-round metrics ``num_labeled``, ``test_accuracy``, ``seconds`` (train, score, select).

``al_round`` is a function of (state, experiment) to state; every random choice is derived from
``(seed, round, epoch, step)`` by ``fold_in``, so a rerun, or a run resumed from any checkpoint,
selects the same ids bit for bit on the same machine. Each round trains a new model from scratch.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from jaxdisp import acquisition, dispersion as disp, models, parallel, train
from jaxdisp.data import Dataset

# Streams of randomness, folded into the round key.
_INIT, _TRAIN, _POOL, _ACQUIRE = range(4)


@flax.struct.dataclass
class ALState:
  round: np.ndarray  # int32 scalar: the next round to run
  key: np.ndarray  # uint32 [2]: the experiment's root PRNG key (raw)
  labeled_round: np.ndarray  # int32 [N_train]
  score: np.ndarray  # float32 [N_train]
  modal_label: np.ndarray  # int32 [N_train]
  label_changes: np.ndarray  # int32 [N_train]
  num_labeled: np.ndarray  # int32 [rounds + 1]
  test_accuracy: np.ndarray  # float32 [rounds + 1], nan = not run
  seconds: np.ndarray  # float32 [rounds + 1, 3]: train, score, select

  def selected(self, round_: int) -> np.ndarray:
    """Dataset ids queried at the end of ``round_`` (sorted)."""
    return np.flatnonzero(self.labeled_round == round_ + 1)


def initial_state(seed: int, num_train: int, initial_size: int, rounds: int) -> ALState:
  """Round 0: a keyed uniformly random initial labeled set."""
  key = jax.random.PRNGKey(seed)
  perm = np.asarray(jax.random.permutation(jax.random.fold_in(key, 10**6), num_train))
  labeled_round = np.full(num_train, -1, np.int32)
  labeled_round[perm[:initial_size]] = 0
  return ALState(
      round=np.int32(0), key=np.asarray(key, np.uint32), labeled_round=labeled_round,
      score=np.full(num_train, np.nan, np.float32),
      modal_label=np.full(num_train, -1, np.int32),
      label_changes=np.full(num_train, -1, np.int32),
      num_labeled=np.zeros(rounds + 1, np.int32),
      test_accuracy=np.full(rounds + 1, np.nan, np.float32),
      seconds=np.zeros((rounds + 1, 3), np.float32))


@dataclasses.dataclass
class Experiment:
  """Everything fixed for a run: config, data on device, compiled functions, buffer sizes."""
  cfg: object
  dataset: Dataset
  mesh: object
  data: train.DeviceData
  trainer: train.Trainer
  labeled_capacity: int  # fits the final labeled set: one compiled epoch for all rounds
  pool_capacity: int

  @classmethod
  def create(cls, cfg, dataset: Dataset, mesh=None) -> 'Experiment':
    mesh = mesh if mesh is not None else parallel.make_mesh(cfg.num_devices)
    model = models.create_model(cfg.model, dataset.num_classes)
    trainer = train.Trainer(model, cfg, mesh, dataset.image_shape, dataset.num_classes)
    a = cfg.al
    final = a.initial_size + a.budget * a.rounds
    pool = dataset.num_train - a.initial_size
    if a.pool_subset:
      pool = min(pool, a.pool_subset)
    return cls(cfg, dataset, mesh, train.put_data(dataset, mesh, trainer.shard_train), trainer,
               train.labeled_capacity(final, cfg.train.batch_size),
               trainer.pool_capacity(pool))

  def with_train_labels(self, labels: np.ndarray) -> 'Experiment':
    """The same experiment training on ``labels`` (e.g. the oracle's answers) instead."""
    on_device = parallel.put_replicated(np.asarray(labels, np.int32), self.mesh)
    return dataclasses.replace(self, data=self.data.replace(train_labels=on_device))

  def initial_state(self) -> ALState:
    a = self.cfg.al
    return initial_state(self.cfg.seed, self.dataset.num_train, a.initial_size, a.rounds)


@dataclasses.dataclass
class Hooks:
  """Side effects a round may perform; all optional. ``al_round`` stays a pure state update."""
  on_epoch: Callable | None = None  # (round, epoch, train_state, history, metrics) -> None
  restore_train: Callable | None = None  # (round, like_state, like_history) -> (state, hist)|None
  on_diagnostics: Callable | None = None  # (round, {'ids', 'dispersion', 'margin', ...}) -> None


def pool_ids_for_round(state: ALState, exp: Experiment, key) -> np.ndarray:
  """The unlabeled ids scored this round (all, or a keyed random ``al.pool_subset``)."""
  ids = np.flatnonzero(state.labeled_round < 0)
  subset = exp.cfg.al.pool_subset
  if subset and subset < len(ids):
    pick = np.asarray(jax.random.permutation(key, len(ids)))[:subset]
    ids = np.sort(ids[pick])
  return ids


def train_round(exp: Experiment, labeled_ids, pool_ids, key, round_: int, hooks: Hooks):
  """Trains a fresh model on ``labeled_ids`` recording predictions on ``pool_ids``."""
  tr = exp.trainer
  k_init, k_train = jax.random.split(key)
  labeled, num_labeled = tr.index_buffer(labeled_ids, exp.labeled_capacity)
  pool, num_pool = tr.index_buffer(pool_ids, exp.pool_capacity)
  state, history = tr.init(k_init), tr.empty_history(exp.pool_capacity)
  if hooks.restore_train:
    restored = hooks.restore_train(round_, state, history)
    if restored is not None:
      state, history = restored
      logging.info('round %d: resuming training at epoch %d', round_, int(state.epoch))
  for epoch in range(int(state.epoch), exp.cfg.train.epochs):
    state, history, metrics = tr.train_epoch(state, history, exp.data, labeled, num_labeled,
                                             pool, num_pool, k_train)
    if hooks.on_epoch:
      hooks.on_epoch(round_, epoch, state, history, metrics)
  return state, history, (labeled, num_labeled, pool, num_pool)


def al_round(state: ALState, exp: Experiment, hooks: Hooks = Hooks()) -> ALState:
  """One round: train from scratch, evaluate, and (unless it is the last) query ``budget``."""
  cfg, r = exp.cfg, int(state.round)
  key = jax.random.fold_in(jnp.asarray(state.key), r)
  labeled_ids = np.flatnonzero(state.labeled_round >= 0)
  pool_ids = pool_ids_for_round(state, exp, jax.random.fold_in(key, _POOL))

  t0 = time.perf_counter()
  train_state, history, buffers = train_round(exp, labeled_ids, pool_ids,
                                              jax.random.fold_in(key, _TRAIN), r, hooks)
  accuracy = float(exp.trainer.evaluate(train_state, exp.data))
  t1 = time.perf_counter()

  new = dict(round=np.int32(r + 1))
  num_labeled = state.num_labeled.copy()
  num_labeled[r] = len(labeled_ids)
  test_accuracy = state.test_accuracy.copy()
  test_accuracy[r] = accuracy
  seconds = state.seconds.copy()
  seconds[r, 0] = t1 - t0
  if r < cfg.al.rounds and len(pool_ids):
    labeled, num_labeled_dev, pool, num_pool = buffers
    selection = acquisition.acquire(cfg, exp.trainer, train_state, exp.data, history, pool,
                                    num_pool, labeled, num_labeled_dev,
                                    jax.random.fold_in(key, _ACQUIRE), exp.dataset.num_classes)
    t2 = time.perf_counter()
    new.update(_record_selection(state, exp, history, pool_ids, selection, r))
    seconds[r, 1] = t2 - t1
    seconds[r, 2] = time.perf_counter() - t2
    if hooks.on_diagnostics:
      diag = acquisition.pool_diagnostics(cfg, exp.trainer, train_state, exp.data, history, pool,
                                          num_pool, acquisition.score_key(
                                              jax.random.fold_in(key, _ACQUIRE)),
                                          exp.dataset.num_classes)
      hooks.on_diagnostics(r, {'ids': pool_ids.astype(np.int64), **diag})
  return state.replace(num_labeled=num_labeled, test_accuracy=test_accuracy, seconds=seconds,
                       **new)


def _record_selection(state: ALState, exp: Experiment, history, pool_ids, selection, r: int):
  """Stamps the queried ids with round ``r + 1`` and keeps their provenance."""
  ids = pool_ids[selection.positions]
  labeled_round = state.labeled_round.copy()
  if np.any(labeled_round[ids] >= 0):
    raise AssertionError('selected an already labeled sample')  # internal invariant
  labeled_round[ids] = r + 1
  score, modal, changes = (state.score.copy(), state.modal_label.copy(),
                           state.label_changes.copy())
  score[ids] = selection.scores
  if history.shape[0]:
    cols = parallel.to_host(_take_columns(history, selection.positions))  # [T, budget] only
    modal[ids] = np.asarray(disp.modal_label(cols, exp.dataset.num_classes))
    changes[ids] = np.asarray(disp.label_changes(cols))
  return dict(labeled_round=labeled_round, score=score, modal_label=modal,
              label_changes=changes)


@jax.jit
def _take_columns(history, positions):
  return jnp.take(history, positions, axis=1)


def is_finished(state: ALState, cfg) -> bool:
  return int(state.round) > cfg.al.rounds
