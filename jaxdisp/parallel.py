"""The data-parallel mesh and the helpers that place arrays on it.

One 1-D mesh axis, ``data``, spans every device. Parameters, optimizer state and the dataset are
replicated; batches, the unlabeled pool, the prediction history and the scores are split along
``data``. Everything is plain ``jax.jit`` over ``NamedSharding`` (global-view SPMD): XLA inserts
the gradient all-reduce, and BatchNorm statistics are computed over the global batch (sync-BN),
which matches the authors' single-GPU PyTorch numerics. The mesh axis is ``AxisType.Auto`` so
gathers by sharded indices and ``top_k``/``sort`` over sharded scores need no annotations.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from jaxdisp.errors import ConfigError

DATA = 'data'


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

  ``indices`` has a length that is a multiple of ``chunk``, and ``chunk`` a multiple of the
  device count. Device ``d`` handles the ``d``-th contiguous block of ``indices``, a slice of
  ``chunk / devices`` per scan step, so the outputs come back in position order with the
  ``P('data')`` layout and no data moves between devices. Returns ``fn``'s outputs stacked along a
  leading axis of ``len(indices)``.
  """
  n, d = indices.shape[0], mesh.size
  per_device, e = n // d, chunk // d
  steps = per_device // e

  def to_chunks(x):
    return x.reshape(d, steps, e).transpose(1, 0, 2).reshape(steps, d * e)

  def from_chunks(y):
    y = y.reshape(steps, d, e, *y.shape[2:])
    return jnp.swapaxes(y, 0, 1).reshape(n, *y.shape[3:])

  valid = jnp.arange(n) < num_valid

  def body(carry, xs):
    idx, ok = xs
    return carry, fn(constrain(idx, mesh), constrain(ok, mesh))

  _, out = jax.lax.scan(body, None, (to_chunks(indices), to_chunks(valid)))
  return jax.tree.map(from_chunks, out)
