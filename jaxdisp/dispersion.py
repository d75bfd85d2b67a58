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

A sample with no recorded epoch gets dispersion 0.

How it is computed (a bandwidth-bound pass over the history, no ``[T, N, C]`` or ``[N, C]`` array):
the per-class counts of each sample are *packed*, four 8-bit counters per uint32 word
(two 16-bit counters when T > 255), so class ``c`` adds ``1 << (8 * (c % 4))`` to word ``c // 4``
and ``ceil(C / 4)`` words hold all ``C`` counts. The sum over epochs is done in chunks of
``ROWS_PER_CHUNK`` rows, each an elementwise fusion over the pool (XLA:CPU's reduction over a long
leading axis is 10-100x slower than this; see benchmarks/README.md). The modal count, the modal
label and the number of recorded epochs are read off the packed words with elementwise ops.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

Array = jax.Array

ROWS_PER_CHUNK = 16
MAX_EPOCHS = 65535


def _lane_bits(num_rows: int) -> int:
  if num_rows > MAX_EPOCHS:
    raise ValueError(f'history has {num_rows} rows; at most {MAX_EPOCHS} recorded epochs are '
                     'supported')
  return 8 if num_rows <= 255 else 16


def _chunked_sum(values_of_rows, num_rows: int) -> Array:
  """``sum_t values_of_rows(t0, t1)`` over row chunks of ``ROWS_PER_CHUNK`` (uint32 ``[..., N]``)."""
  total = None
  for t0 in range(0, num_rows, ROWS_PER_CHUNK):
    part = jnp.sum(values_of_rows(t0, min(t0 + ROWS_PER_CHUNK, num_rows)), axis=0,
                   dtype=jnp.uint32)
    total = part if total is None else total + part
  return total


def packed_class_counts(history: Array, num_classes: int) -> Array:
  """Per-class counts of each column, packed: uint32 ``[ceil(C / per_word), N]``.

  Counter ``c`` of column ``x`` is ``(words[c // per_word, x] >> (bits * (c % per_word))) & mask``
  with ``bits = 8`` (``per_word = 4``) when ``T <= 255``, else 16 (``per_word = 2``). Entries
  outside ``[0, num_classes)`` are not counted.
  """
  history = jnp.asarray(history)
  num_rows, n = history.shape
  bits = _lane_bits(num_rows)
  per_word = 32 // bits
  num_words = -(-num_classes // per_word)
  if num_rows == 0:
    return jnp.zeros((num_words, n), jnp.uint32)

  def words_of_rows(t0, t1):
    h = history[t0:t1].astype(jnp.int32)
    valid = (h >= 0) & (h < num_classes)
    word = jnp.where(valid, h // per_word, -1)
    one = jnp.left_shift(jnp.uint32(1), ((h % per_word) * bits).astype(jnp.uint32))
    return jnp.stack([jnp.where(word == k, one, jnp.uint32(0)) for k in range(num_words)], 1)

  return _chunked_sum(words_of_rows, num_rows)


def _unpack(words: Array, num_classes: int, bits: int):
  """Yields ``(class id, int32 [N] count)`` for every class, from packed words."""
  per_word = 32 // bits
  mask = jnp.uint32((1 << bits) - 1)
  for c in range(num_classes):
    yield c, ((words[c // per_word] >> (bits * (c % per_word))) & mask).astype(jnp.int32)


def _mode(words: Array, num_classes: int, bits: int):
  """(modal count, modal class; ties: the smallest class id), int32 ``[N]`` each."""
  best = label = None
  for c, count in _unpack(words, num_classes, bits):
    if best is None:
      best, label = count, jnp.zeros_like(count)
    else:
      better = count > best
      best, label = jnp.where(better, count, best), jnp.where(better, c, label)
  return best, label


def num_recorded(history: Array) -> Array:
  """How many epochs were recorded for each column (entries ``>= 0``); int32 ``[N]``."""
  history = jnp.asarray(history)
  if history.shape[0] == 0:
    return jnp.zeros(history.shape[1:], jnp.int32)
  return _chunked_sum(lambda t0, t1: (history[t0:t1] >= 0).astype(jnp.uint32),
                      history.shape[0]).astype(jnp.int32)


def class_counts(history: Array, num_classes: int) -> Array:
  """``[N, C]`` int32: how often each class was predicted for each sample."""
  bits = _lane_bits(history.shape[0])
  words = packed_class_counts(history, num_classes)
  return jnp.stack([count for _, count in _unpack(words, num_classes, bits)], axis=-1)


@functools.partial(jax.jit, static_argnames=('num_classes', 'mode_last_k', 'denominator'))
def label_dispersion(history: Array, num_classes: int, *, mode_last_k: int = 0,
                     denominator: str = 'T') -> Array:
  """Dispersion ``1 - f_x / T_x`` of every column of ``history``; float32 ``[N]``."""
  if denominator not in ('T', 'T+1'):
    raise ValueError(f"denominator must be 'T' or 'T+1', got {denominator!r}")
  history = jnp.asarray(history)
  bits = _lane_bits(history.shape[0])
  words = packed_class_counts(history, num_classes)
  recorded = num_recorded(history)
  if mode_last_k:
    window = last_recorded_rows(history, mode_last_k)
    _, mode = _mode(packed_class_counts(window, num_classes), num_classes, bits)
    f = jnp.zeros_like(mode)
    for c, count in _unpack(words, num_classes, bits):
      f = jnp.where(mode == c, count, f)
  else:
    f, _ = _mode(words, num_classes, bits)
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
  history = jnp.asarray(history)
  bits = _lane_bits(history.shape[0])
  best, label = _mode(packed_class_counts(history, num_classes), num_classes, bits)
  return jnp.where(best > 0, label, -1).astype(jnp.int32)


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
