"""Label dispersion over the prediction history (vectorised ``jnp``; runs on TPU/GPU/CPU).

``history`` is an int array ``[T, N]``: row ``t`` holds the label predicted for each pool sample
after the ``t``-th recorded epoch; entries ``< 0`` mean "not recorded" and are left out of both
the counts and ``T``. With ``f_x`` the count of the most frequent label of sample ``x`` over its
``T_x`` recorded epochs,

    dispersion(x) = 1 - f_x / T_x

(0 = the network never changed its mind; at most ``1 - ceil(T/C)/T``). Two options reproduce the
authors' code (Javadzb/Class-Balanced-AL, ``query_strategies/dispersion.py``), both off by default:

* ``mode_last_k=k``: the modal class is taken over the last ``k`` rows only (ties: the smallest
  class id), then counted over all rows (the authors use k = 25 of T = 100);
* ``denominator='T+1'``: divide by ``T_x + 1`` (their ``n_epoch + 1``), so a sample that never
  changes scores ``1/(T+1)`` instead of 0.

A sample with no recorded epoch gets dispersion 0. The functions are jitted (one fused program:
the ``[T, N, C]`` comparison inside :func:`class_counts` is never materialised).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

Array = jax.Array


def class_counts(history: Array, num_classes: int) -> Array:
  """``[N, C]`` int32: how often each class was predicted for each sample."""
  classes = jnp.arange(num_classes, dtype=history.dtype)
  return jnp.sum(history[:, :, None] == classes, axis=0, dtype=jnp.int32)


@functools.partial(jax.jit, static_argnames=('num_classes', 'mode_last_k', 'denominator'))
def label_dispersion(history: Array, num_classes: int, *, mode_last_k: int = 0,
                     denominator: str = 'T') -> Array:
  """Dispersion ``1 - f_x / T_x`` of every column of ``history``; float32 ``[N]``."""
  if denominator not in ('T', 'T+1'):
    raise ValueError(f"denominator must be 'T' or 'T+1', got {denominator!r}")
  history = jnp.asarray(history)
  counts = class_counts(history, num_classes)
  recorded = jnp.sum(history >= 0, axis=0, dtype=jnp.int32)
  if mode_last_k:
    window = last_recorded_rows(history, mode_last_k)
    mode = jnp.argmax(class_counts(window, num_classes), axis=-1)
    f = jnp.take_along_axis(counts, mode[:, None], axis=-1)[:, 0]
  else:
    f = counts.max(axis=-1)
  t = recorded + 1 if denominator == 'T+1' else recorded
  # (T - f) / T: an exact integer over an exact integer, so one correctly rounded division.
  return jnp.where(t > 0, (t - f).astype(jnp.float32) / jnp.maximum(t, 1).astype(jnp.float32),
                   jnp.float32(0))


def last_recorded_rows(history: Array, k: int) -> Array:
  """The last ``k`` recorded entries of each column (older entries masked to -1)."""
  recorded = history >= 0
  # Rank of each recorded entry counted from the end of its column (0 = the latest).
  from_end = jnp.cumsum(recorded[::-1], axis=0)[::-1] - 1
  return jnp.where(recorded & (from_end < k), history, jnp.array(-1, history.dtype))


@functools.partial(jax.jit, static_argnames=('num_classes',))
def modal_label(history: Array, num_classes: int) -> Array:
  """The most frequent recorded label of each sample (ties: smallest class id); -1 if none."""
  counts = class_counts(history, num_classes)
  return jnp.where(counts.max(-1) > 0, jnp.argmax(counts, -1), -1).astype(jnp.int32)


@jax.jit
def label_changes(history: Array) -> Array:
  """How often the predicted label changed between consecutive recorded epochs; int32 ``[N]``."""
  def step(carry, row):
    prev, changes = carry
    ok = row >= 0
    changes += (ok & (prev >= 0) & (row != prev)).astype(jnp.int32)
    return (jnp.where(ok, row, prev), changes), None

  init = (jnp.full(history.shape[1:], -1, history.dtype),
          jnp.zeros(history.shape[1:], jnp.int32))
  (_, changes), _ = jax.lax.scan(step, init, history)
  return changes
