"""The single model's steps (pure; jitted by the caller): one optimizer step, the begin and the
steps of an epoch, and the test-set evaluation.

A step minimises ``setup.objective`` (``task_loss.Objective``): the task loss, or an auxiliary
head's loss wrapped around it (``aux_head.AuxHead``). The same :func:`train_step` serves both; it
never asks which. The labeled set is a fixed-capacity index buffer plus a count: an epoch shuffles
its real prefix (:func:`epoch_begin`) and step ``s`` trains on slice ``s`` (:func:`epoch_step`),
the last one padded and masked.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jaxdisp import input_pipeline, parallel
from jaxdisp.input_pipeline import DeviceData
from jaxdisp.train.metrics import StepSums
from jaxdisp.train.state import TrainSetup, TrainState, lr_for_epoch, variables

Array = jax.Array


def model_inputs(setup: TrainSetup, data: DeviceData, idx: Array, keys: Array | None = None,
                 train_split: bool = True) -> Array:
  """Normalised (and, with ``keys``, augmented) images of rows ``idx`` of a split; for feature
  vectors ``[N, D]`` the standardised vectors (never augmented: ``make_setup`` refuses it)."""
  if train_split and setup.shard_train:
    images = parallel.gather_rows(data.train_images, idx, setup.mesh)
  else:
    images = (data.train_images if train_split else data.test_images)[idx]
  if keys is not None:
    images = input_pipeline.random_crop_flip(keys, images)
  return input_pipeline.normalize(images, data.mean, data.std, setup.compute_dtype)


def train_step(setup: TrainSetup, state: TrainState, data: DeviceData, idx: Array, mask: Array,
               key: Array) -> tuple[TrainState, StepSums]:
  """One SGD step of ``setup.objective`` on the labeled rows ``idx`` (``mask``: real rows of a
  padded batch). The objective sees ``state.epoch`` (traced: one compiled step for every
  epoch), e.g. for an auxiliary head's detach epoch."""
  k_aug, k_drop = jax.random.split(key)
  aug_keys = jax.random.split(k_aug, idx.shape[0]) if setup.train_cfg.augment else None
  x = model_inputs(setup, data, idx, aug_keys)
  labels = data.train_labels[idx]
  weights = mask.astype(jnp.float32)

  def loss_fn(params):
    v = {'params': params, 'batch_stats': state.batch_stats}
    return setup.objective(setup.model, v, x, labels, mask, state.epoch, k_drop)

  (_, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = setup.tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  correct = ((jnp.argmax(terms.logits, -1) == labels) * weights).sum()
  state = state.replace(params=params, batch_stats=terms.batch_stats, opt_state=opt_state)
  return state, StepSums(terms.task * weights.sum(), correct, weights.sum(), jnp.int32(-1),
                         terms.aux)


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
  return state, labeled[order], (k_steps, k_pool), lr, StepSums.zeros(setup.objective.terms)


def epoch_step(setup: TrainSetup, step: Array, carry: tuple[TrainState, StepSums],
               data: DeviceData, shuffled: Array, num_labeled: Array,
               k_steps: Array) -> tuple[TrainState, StepSums]:
  """Optimizer step ``step`` of the epoch on slice ``step`` of the shuffled labeled ids; the
  ``carry`` of the step loop (``loop.py``) is the state and the epoch's running sums."""
  state, sums = carry
  b = setup.batch_size
  idx = jax.lax.dynamic_slice(shuffled, (step * b,), (b,))
  mask = step * b + jnp.arange(b) < num_labeled
  idx, mask = parallel.constrain(idx, setup.mesh), parallel.constrain(mask, setup.mesh)
  state, m = train_step(setup, state, data, idx, mask, jax.random.fold_in(k_steps, step))
  return state, sums.add(step, m)


def evaluate(setup: TrainSetup, state: TrainState, data: DeviceData) -> dict:
  """``{'accuracy': top-1 accuracy, 'class_correct': [C] hits per true class}`` on the test
  split (eval mode, no augmentation)."""
  v = variables(state)
  return accuracy_on_test(setup, data, lambda x: jnp.argmax(
      setup.model.apply(v, x, train=False), -1))


def accuracy_on_test(setup: TrainSetup, data: DeviceData, predict) -> dict:
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
