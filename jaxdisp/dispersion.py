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

A sample with no recorded epoch gets dispersion 0 (under either denominator).

**How it is computed.** The history is read once, in blocks of columns: for each block a loop
adds up to 32 history rows at a time into per-class counters ``[C, block]`` (uint8 while
``T <= 255``) that stay in cache, as one elementwise fusion (compare with every class, add); the
modal count, the modal class and the number of recorded epochs are then read off the block's
counters. No ``[T, N, C]`` or ``[N, C]`` array reaches memory (the obvious
``sum(history[..., None] == classes, 0)`` makes XLA:CPU materialise the ``[T, N, C]`` int32
comparison: 1.8 GB for CIFAR-100's pool, 50-300x slower; ``benchmarks/dispersion_kernel.py``).
Every column is computed on its own with integer counts, so results are exact and do not depend
on blocking or device count. :func:`sharded_label_dispersion` runs the same kernel on each
device's slice of a pool-sharded history, with no communication.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec as P

Array = jax.Array

MAX_ROWS_PER_STEP = 32  # history rows added per loop step (one fusion)


def _count_dtype(num_rows: int):
  return jnp.uint8 if num_rows <= 255 else jnp.uint16 if num_rows <= 65535 else jnp.int32


def block_width(num_classes: int, n: int, platform: str | None = None) -> int:
  """Columns per block.

  CPU: a power of two near ``16384 / C`` counters, in [512, 2048] (measured here: 1024 for
  C = 10, 512 for C = 100), so the ``[C, block]`` counters stay in L1/L2 while the rows stream
  through. GPU/TPU: all ``n`` columns in one block (a loop of small blocks would be a chain of tiny
  kernels there; one wide elementwise fusion per row group is what those chips do well).
  """
  if (platform or jax.default_backend()) != 'cpu':
    return max(n, 1)
  per_block = 1 << max((16384 // max(num_classes, 1)).bit_length() - 1, 0)
  return max(1, min(n, max(512, min(2048, per_block))))


def rows_per_step(num_rows: int) -> int:
  """History rows added per loop step: a divisor of ``T`` in [16, 32] if there is one, else
  ``T`` split into equal groups of at most 32 rows (the last one overlaps, masked)."""
  if num_rows <= MAX_ROWS_PER_STEP:
    return max(num_rows, 1)
  divisors = [u for u in range(16, MAX_ROWS_PER_STEP + 1) if num_rows % u == 0]
  if divisors:
    return max(divisors)
  steps = -(-num_rows // MAX_ROWS_PER_STEP)
  return -(-num_rows // steps)


def _counts(history: Array, start, width: int, num_classes: int, dtype) -> Array:
  """``[C, width]`` per-class counts of columns ``[start, start + width)`` of ``history``.

  The rows are added ``u`` at a time (:func:`rows_per_step`) inside a ``fori_loop``, each step
  one fusion that slices ``u`` rows of the block straight from the history, compares them with
  every class and adds into counters that stay in cache. When ``u`` does not divide ``T`` the
  last step's slice is moved back to end at row ``T`` and its rows already counted are masked.
  """
  t = history.shape[0]
  u = rows_per_step(t)
  steps = -(-t // u)
  classes = jnp.arange(num_classes, dtype=history.dtype)[:, None]

  def add(j, counts):
    first = jnp.minimum(j * u, t - u)  # the slice stays inside the history
    group = jax.lax.dynamic_slice(history, (first, start), (u, width))
    for r in range(u):
      row = group[r]
      if t % u:
        row = jnp.where(first + r >= j * u, row, jnp.array(-1, row.dtype))
      counts = counts + (row[None] == classes).astype(dtype)
    return counts

  counts = jax.lax.fori_loop(0, steps, add, jnp.zeros((num_classes, width), dtype))
  # Materialise the counters: a one-step loop is inlined, and fused into its several readers
  # (max, sum, argmax) the compare-adds would be redone once per reader.
  return jax.lax.optimization_barrier(counts)


def _by_blocks(column_fn, n: int, block: int) -> Array:
  """``column_fn(start, width)`` (float32 ``[width]``) over blocks of ``block`` columns -> ``[N]``.

  A ``fori_loop`` over the full blocks writes each block's result into a carried output (updated
  in place); the remainder is one more block of static width.
  """
  full = n // block
  out = jnp.zeros((n,), jnp.float32)
  if full:
    out = jax.lax.fori_loop(0, full, lambda i, out: jax.lax.dynamic_update_slice(
        out, column_fn(i * block, block), (i * block,)), out)
  if n - full * block:
    out = jax.lax.dynamic_update_slice(out, column_fn(full * block, n - full * block),
                                       (full * block,))
  return out


@functools.partial(jax.jit, static_argnames=('num_classes', 'mode_last_k', 'denominator',
                                             'block'))
def label_dispersion(history: Array, num_classes: int, *, mode_last_k: int = 0,
                     denominator: str = 'T', block: int = 0) -> Array:
  """Dispersion ``1 - f_x / T_x`` of every column of ``history``; float32 ``[N]``.

  ``block``: columns per block (0 = :func:`block_width`); results do not depend on it.
  """
  if denominator not in ('T', 'T+1'):
    raise ValueError(f"denominator must be 'T' or 'T+1', got {denominator!r}")
  history = jnp.asarray(history)
  t_rows, n = history.shape
  if n == 0 or t_rows == 0:  # nothing recorded: dispersion 0
    return jnp.zeros((n,), jnp.float32)
  dtype = _count_dtype(t_rows)
  window = last_recorded_rows(history, mode_last_k) if mode_last_k else None

  def columns(start, width: int):
    counts = _counts(history, start, width, num_classes, dtype)
    recorded = counts.astype(jnp.int32).sum(0)
    if window is None:
      f = counts.max(0).astype(jnp.int32)
    else:  # the window's modal class (ties: the smallest id), counted over all rows
      mode = jnp.argmax(_counts(window, start, width, num_classes, dtype), 0)
      f = jnp.take_along_axis(counts, mode[None], 0)[0].astype(jnp.int32)
    t = recorded + 1 if denominator == 'T+1' else recorded
    # (T - f) / T: an exact integer over an exact integer, so one correctly rounded division.
    # A column with no recorded entry scores 0 under either denominator (with 'T+1', t = 1 there).
    return jnp.where(recorded > 0,
                     (t - f).astype(jnp.float32) / jnp.maximum(t, 1).astype(jnp.float32),
                     jnp.float32(0))

  return _by_blocks(columns, n, block or block_width(num_classes, n))


def sharded_label_dispersion(history: Array, num_classes: int, mesh: Mesh, axis: str = 'data',
                             **options) -> Array:
  """:func:`label_dispersion` of a history split along the pool over ``axis`` of ``mesh``.

  Each device scores its own columns (``jax.shard_map``): no column crosses devices, and the
  scores come back split the same way. Identical to the unsharded result.
  """
  if mesh.size == 1:
    return label_dispersion(history, num_classes, **options)
  return _sharded_kernel(num_classes, mesh, axis, tuple(sorted(options.items())))(history)


@functools.lru_cache(maxsize=None)
def _sharded_kernel(num_classes: int, mesh: Mesh, axis: str, options: tuple):
  """One jitted ``shard_map`` per (classes, mesh, options): built once, so a round compiles
  nothing new (a fresh function per call would be a fresh compilation per call)."""
  kernel = functools.partial(label_dispersion, num_classes=num_classes, **dict(options))
  return jax.jit(jax.shard_map(kernel, mesh=mesh, in_specs=P(None, axis), out_specs=P(axis),
                               check_vma=False))


@functools.partial(jax.jit, static_argnames=('num_classes', 'block'))
def pool_modal_labels(history: Array, num_classes: int, *, block: int = 0) -> Array:
  """The most frequent recorded label of every column (ties: the smallest class id; -1 when
  nothing was recorded); int32 ``[N]``. The blocked kernel of :func:`label_dispersion` (no
  ``[T, N, C]`` or ``[N, C]`` array), for whole pools; :func:`modal_label` is the same for a few
  columns."""
  history = jnp.asarray(history)
  t_rows, n = history.shape
  if n == 0 or t_rows == 0:
    return jnp.full((n,), -1, jnp.int32)
  dtype = _count_dtype(t_rows)

  def columns(start, width: int):
    counts = _counts(history, start, width, num_classes, dtype)
    mode = jnp.argmax(counts, 0)
    return jnp.where(counts.max(0) > 0, mode, -1).astype(jnp.float32)  # exact below 2^24

  return _by_blocks(columns, n, block or block_width(num_classes, n)).astype(jnp.int32)


def sharded_pool_modal_labels(history: Array, num_classes: int, mesh: Mesh,
                              axis: str = 'data') -> Array:
  """:func:`pool_modal_labels` of a history split along the pool (each device its columns)."""
  if mesh.size == 1:
    return pool_modal_labels(history, num_classes)
  return _sharded_modal_kernel(num_classes, mesh, axis)(history)


@functools.lru_cache(maxsize=None)
def _sharded_modal_kernel(num_classes: int, mesh: Mesh, axis: str):
  kernel = functools.partial(pool_modal_labels, num_classes=num_classes)
  return jax.jit(jax.shard_map(kernel, mesh=mesh, in_specs=P(None, axis), out_specs=P(axis),
                               check_vma=False))


def class_counts(history: Array, num_classes: int) -> Array:
  """``[N, C]`` int32: how often each class was predicted for each sample (small inputs)."""
  classes = jnp.arange(num_classes, dtype=history.dtype)
  return jnp.sum(history[:, :, None] == classes, axis=0, dtype=jnp.int32)


def last_recorded_rows(history: Array, k: int) -> Array:
  """The last ``k`` recorded entries of each column (older entries masked to -1)."""
  recorded = history >= 0
  # Rank of each recorded entry counted from the end of its column (0 = the latest).
  from_end = jnp.cumsum(recorded[::-1], axis=0)[::-1] - 1
  return jnp.where(recorded & (from_end < k), history, jnp.array(-1, history.dtype))


@functools.partial(jax.jit, static_argnames=('num_classes',))
def modal_label(history: Array, num_classes: int) -> Array:
  """The most frequent recorded label of each sample (ties: smallest class id); -1 if none.

  Meant for the selected samples' columns (``[T, budget]``), not the whole pool.
  """
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
