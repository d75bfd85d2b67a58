"""The data-parallel mesh and the helpers that place arrays on it.

One 1-D mesh axis, ``data``, spans every device. Parameters, optimizer state and the dataset are
replicated; batches, the unlabeled pool, the prediction history and the scores are split along
``data``. Everything is plain ``jax.jit`` over ``NamedSharding`` (global-view SPMD): XLA inserts
the gradient all-reduce, and BatchNorm statistics are computed over the global batch (sync-BN),
which matches the authors' single-GPU PyTorch numerics. The mesh axis is ``AxisType.Auto`` so
gathers by sharded indices and ``top_k``/``sort`` over sharded scores need no annotations.
"""

from __future__ import annotations

import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from jaxdisp.errors import ConfigError

DATA = 'data'


def initialize_distributed(coordinator_address=None, num_processes=None, process_id=None):
  """Joins a multi-process run (JAX's multi-controller runtime) when there is one.

  Explicit flags on any platform (CPU processes use gloo collectives); on a multi-host Cloud TPU
  slice, ``jax.distributed.initialize()`` finds its peers by itself.
  """
  given = [v is not None for v in (coordinator_address, num_processes, process_id)]
  if any(given) and not all(given):
    raise ConfigError('--coordinator_address, --num_processes and --process_id go together')
  if all(given):
    if num_processes < 1 or not 0 <= process_id < num_processes:
      raise ConfigError(f'--process_id={process_id} must be in [0, --num_processes='
                        f'{num_processes})')
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
  elif ',' in os.environ.get('TPU_WORKER_HOSTNAMES', ''):
    jax.distributed.initialize()


def make_mesh(num_devices: int = 0) -> Mesh:
  """A 1-D ``data`` mesh over the first ``num_devices`` devices (0 = all)."""
  available = jax.device_count()
  n = num_devices or available
  if n > available:
    raise ConfigError(f'num_devices={num_devices} but only {available} device(s) are visible')
  return jax.make_mesh((n,), (DATA,), axis_types=(AxisType.Auto,), devices=jax.devices()[:n])


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def sharded(mesh: Mesh, ndim: int = 1, axis: int = 0) -> NamedSharding:
  """Split ``axis`` of an ``ndim``-dimensional array over the ``data`` axis."""
  spec = [None] * ndim
  spec[axis] = DATA
  return NamedSharding(mesh, P(*spec))


def _global_array(x, sharding: NamedSharding) -> jax.Array:
  """A global array from a host value every process holds in full (works multi-process)."""
  x = np.asarray(x)
  return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def put_replicated(tree, mesh: Mesh):
  return jax.tree.map(lambda x: _global_array(x, replicated(mesh)), tree)


def put_sharded(x: np.ndarray, mesh: Mesh, axis: int = 0) -> jax.Array:
  return _global_array(x, sharded(mesh, np.ndim(x), axis))


def put_rows(rows, num_rows: int, mesh: Mesh, on_rows: Callable | None = None) -> jax.Array:
  """``rows`` (anything sliceable along axis 0: an array, a memory map, ``data.FolderRows``)
  padded with zeros to ``num_rows`` and split along axis 0 over ``data``.

  Each process reads only the rows of its own devices' shards (``rows[a:b]``, once each), so a
  multi-host run never loads the whole dataset on one host. ``on_rows(block)`` sees every block of
  real rows read (e.g. to compute statistics without reading them again).
  """
  n, tail = rows.shape[0], tuple(rows.shape[1:])
  sharding = sharded(mesh, 1 + len(tail))

  def shard(index):
    lo, hi, _ = index[0].indices(num_rows)
    out = np.zeros((hi - lo, *tail), rows.dtype)
    if lo < n:
      block = np.asarray(rows[lo:min(hi, n)])
      out[:len(block)] = block
      if on_rows is not None:
        on_rows(block)
    return out

  return jax.make_array_from_callback((num_rows, *tail), sharding, shard)


def local_row_ranges(x: jax.Array) -> list[tuple[int, int]]:
  """The ``[start, stop)`` rows of ``x`` (split along axis 0) that this process holds."""
  spans = {s.index[0].indices(x.shape[0])[:2] for s in x.addressable_shards}
  return sorted(spans)


def gather_rows(table: jax.Array, idx: jax.Array, mesh: Mesh) -> jax.Array:
  """Inside jit: ``table[idx]`` for a ``table`` split along axis 0 over ``data``.

  Every device takes the requested rows it holds (zeros for the others), and a reduce-scatter
  over ``data`` sums these partial batches and leaves each device its slice of the batch:
  exact (one non-zero term per element), with ``len(idx)`` rows crossing the interconnect
  instead of the table. ``len(idx)`` must be a multiple of the device count.
  """
  def local(block, ids):
    rows = block.shape[0]
    pos = ids - jax.lax.axis_index(DATA) * rows
    mine = (pos >= 0) & (pos < rows)
    got = block[jnp.clip(pos, 0, rows - 1)]
    got = jnp.where(mine.reshape(-1, *([1] * (block.ndim - 1))), got, jnp.zeros((), got.dtype))
    return jax.lax.psum_scatter(got, DATA, scatter_dimension=0, tiled=True)

  return jax.shard_map(local, mesh=mesh, in_specs=(P(DATA), P()), out_specs=P(DATA))(table, idx)


def sum_over_processes(values: list[int]) -> list[int]:
  """Exact sums of non-negative Python ints (< 2^62) over all processes (as is, with one)."""
  if jax.process_count() == 1:
    return list(values)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  # 31-bit halves: int32 crosses processes exactly whatever jax_enable_x64 says.
  halves = np.array([[v >> 31, v & 0x7FFFFFFF] for v in values], np.int32)
  every = np.asarray(multihost_utils.process_allgather(halves))  # [processes, len, 2]
  return [sum((int(h) << 31) + int(l) for h, l in every[:, i]) for i in range(len(values))]


def to_host(x) -> np.ndarray:
  """A global array as numpy on every process (an all-gather when other hosts hold parts)."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)


def constrain(x: jax.Array, mesh: Mesh) -> jax.Array:
  """Inside jit: split the leading axis of ``x`` over ``data``."""
  return jax.lax.with_sharding_constraint(x, sharded(mesh, x.ndim))


def round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def map_in_chunks(fn: Callable, indices: jax.Array, num_valid: jax.Array, chunk: int,
                  mesh: Mesh):
  """Applies ``fn(idx[chunk], valid[chunk])`` over ``indices`` in chunks, inside jit.

  ``indices`` has a length that is a multiple of the device count, and ``chunk`` a multiple of
  the device count. Device ``d`` handles the ``d``-th contiguous block of ``indices``, a slice of
  ``chunk / devices`` per scan step, so the outputs come back in position order with the
  ``P('data')`` layout and no data moves between devices. A block that is not a whole number of
  slices (a labeled-set buffer, bucketed by the training batch, under a larger eval chunk) is
  padded with invalid rows for the scan and trimmed after it. Returns ``fn``'s outputs stacked
  along a leading axis of ``len(indices)``.
  """
  n, d = indices.shape[0], mesh.size
  per_device, e = n // d, chunk // d
  steps = -(-per_device // e)
  pad = steps * e - per_device

  def to_chunks(x):
    x = x.reshape(d, per_device)
    if pad:
      x = jnp.pad(x, ((0, 0), (0, pad)))
    return x.reshape(d, steps, e).transpose(1, 0, 2).reshape(steps, d * e)

  def from_chunks(y):
    y = y.reshape(steps, d, e, *y.shape[2:])
    y = jnp.swapaxes(y, 0, 1).reshape(d, steps * e, *y.shape[3:])
    return y[:, :per_device].reshape(n, *y.shape[2:])

  valid = jnp.arange(n) < num_valid

  def body(carry, xs):
    idx, ok = xs
    return carry, fn(constrain(idx, mesh), constrain(ok, mesh))

  _, out = jax.lax.scan(body, None, (to_chunks(indices), to_chunks(valid)))
  return jax.tree.map(from_chunks, out)
