"""Members: K independently initialised models trained as one program (``TrainSetup.members``
= K > 1; a strategy asks for them with ``Strategy.members(cfg)``, e.g. a deep ensemble).

The state is a :class:`~jaxdisp.train.state.TrainState` whose every leaf has a leading member
axis ``[K, ...]``, stepped by the single model's steps mapped over that axis inside the same
compiled functions (:func:`over_members`, ``TrainSetup.member_map``, from ``train.member_map``):

* ``vmap``: ``jax.vmap``, one batched program (right on GPU/TPU). On XLA:CPU a convolution
  vmapped over stacked weights becomes a grouped convolution that runs far slower than K plain
  ones;
* ``loop``: the members one after another, unrolled in the traced program (K ordinary copies of
  the single model's step; compile time grows with K);
* ``map``: ``jax.lax.map``, a scan over the members (one copy of the step; XLA:CPU runs a
  convolution's gradient slowly inside a loop, jax-ml/jax#12868);
* ``auto``: ``loop`` on CPU, ``vmap`` elsewhere (:func:`resolve_member_map`; measured by
  ``benchmarks/ensemble_cost.py``).

Member ``m`` gets its own initialisation and its own shuffle, augmentation and dropout keys: the
single model's keys folded with ``m`` (:func:`member_keys`), so member ``m`` is exactly the
single model trained with those keys. The batch axis stays split over ``data``; the member axis
is replicated (every device holds every member, as it holds the single model). The epoch's
metrics are the members' mean loss and accuracy (finite only when all are), and a recorded
prediction history is member 0's. K = 1 never takes this path: the single model's steps are
compiled as they are.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from jaxdisp.input_pipeline import DeviceData
from jaxdisp.train import loop, recording, steps
from jaxdisp.train.metrics import EpochMetrics, StepSums
from jaxdisp.train.state import TrainSetup, TrainState, init_state, variables

Array = jax.Array

MEMBER_MAPS = ('auto', 'vmap', 'map', 'loop')


def resolve_member_map(member_map: str, backend: str) -> str:
  """``vmap``, ``map`` or ``loop``: ``member_map``, or for ``auto`` the faster one on
  ``backend`` as measured (``benchmarks/ensemble_cost.py``): ``loop`` on ``cpu``, ``vmap`` on
  GPU/TPU."""
  if member_map != 'auto':
    return member_map
  return 'loop' if backend == 'cpu' else 'vmap'


def over_members(setup: TrainSetup, fn, *xs):
  """``fn(*x)`` for every member's slice ``x`` of ``xs`` (pytrees with a leading ``[K]``
  axis), stacked on that axis: ``jax.vmap(fn)``, ``jax.lax.map`` or a Python loop over the
  members (``setup.member_map``). Arguments every member shares are closed over by ``fn``."""
  if setup.member_map == 'map':
    return jax.lax.map(lambda x: fn(*x), xs)
  if setup.member_map == 'loop':
    outs = [fn(*jax.tree.map(lambda a, m=m: a[m], xs)) for m in range(setup.members)]
    return jax.tree.map(lambda *o: jnp.stack(o), *outs)
  return jax.vmap(fn)(*xs)


def member_keys(key: Array, members: int) -> Array:
  """``[members]`` keys: ``fold_in(key, m)`` for member ``m``."""
  return jax.vmap(jax.random.fold_in, (None, 0))(key, jnp.arange(members))


def init_members(setup: TrainSetup, key: Array) -> TrainState:
  """``setup.members`` freshly initialised models, stacked (member ``m``: ``fold_in(key, m)``)."""
  return jax.vmap(functools.partial(init_state, setup))(member_keys(key, setup.members))


def members_epoch_begin(setup: TrainSetup, states: TrainState, labeled: Array,
                        num_labeled: Array, key: Array):
  """``steps.epoch_begin`` of every member, each with its own key (its own data order)."""
  return over_members(setup, lambda s, k: steps.epoch_begin(setup, s, labeled, num_labeled, k),
                      states, member_keys(key, setup.members))


def members_epoch_step(setup: TrainSetup, step: Array, carry: tuple[TrainState, StepSums],
                       data: DeviceData, shuffled: Array, num_labeled: Array,
                       k_steps: Array) -> tuple[TrainState, StepSums]:
  """``steps.epoch_step`` of every member (``carry``, ``shuffled``, ``k_steps``: per member)."""
  def one(c, order, k):
    return steps.epoch_step(setup, step, c, data, order, num_labeled, k)
  return over_members(setup, one, carry, shuffled, k_steps)


def _mean_metrics(m: EpochMetrics) -> EpochMetrics:
  """One epoch's metrics of the members together from their ``[K]`` metrics."""
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
  """``recording.epoch_end`` of every member; a recorded history (and statistics) is member
  0's."""
  first = jax.tree.map(lambda x: x[0], states)
  history, stats = recording.record_epoch(setup, first, data, history, stats, pool, num_pool,
                                          k_pool[0])
  quiet = dataclasses.replace(setup, recording=dataclasses.replace(setup.recording,
                                                                   enabled=False))

  def one(state, s, k, rate):
    state, _, _, metrics = recording.epoch_end(quiet, state, history, {}, s, data, pool,
                                               num_pool, k, rate, num_steps)
    return state, metrics

  states, metrics = over_members(setup, one, states, sums, k_pool, lr)
  return states, history, stats, _mean_metrics(metrics)


def members_train_epoch(setup: TrainSetup, states: TrainState, history: Array, stats: dict,
                        data: DeviceData, labeled: Array, num_labeled: Array, pool: Array,
                        num_pool: Array, key: Array):
  """``train_epoch`` of every member in one program (device step loop)."""
  return loop.epoch_on_device((members_epoch_begin, members_epoch_step, members_epoch_end),
                              setup, states, history, stats, data, labeled, num_labeled, pool,
                              num_pool, key)


def member_probs(setup: TrainSetup, states: TrainState, x: Array) -> Array:
  """``[K, n, C]`` softmax probabilities of every member on the normalised images ``x``."""
  logits = over_members(setup, lambda v: setup.model.apply(v, x, train=False),
                        variables(states))
  return jax.nn.softmax(logits.astype(jnp.float32))


def evaluate_members(setup: TrainSetup, states: TrainState, data: DeviceData) -> dict:
  """``steps.evaluate`` of the members' prediction: the argmax of their mean probability (at
  most ``[K, chunk, C]`` at a time)."""
  return steps.accuracy_on_test(setup, data,
                                lambda x: jnp.argmax(member_probs(setup, states, x).mean(0), -1))
