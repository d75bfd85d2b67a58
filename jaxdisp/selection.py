"""Selection of the top ``budget`` pool positions, exact and deterministic on any mesh.

Scores are "higher = query first" and live on device, split over ``data`` like the pool. Label
dispersion takes only T+1 distinct values, so most of a top-k is ties: the order is score
descending, then a secondary key descending (the strategy's tie-break: a keyed random order by
default), then pool position. Padding rows are never selected. One global sort on the device:
only the ``budget`` winners come back to the host, never the score vector.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Selection:
  """What one round queried: pool positions in selection order, with their scores."""
  positions: np.ndarray  # int [budget], into the round's pool buffer
  scores: np.ndarray  # float32 [budget]


@functools.partial(jax.jit, static_argnames=('budget',))
def select_top(scores: Array, tie: Array, num_valid: Array, budget: int) -> tuple[Array, Array]:
  """Positions of the ``budget`` highest scores among the first ``num_valid`` rows, and scores.

  Order: score descending, then ``tie`` descending, then position ascending.
  """
  n = scores.shape[0]
  pos = jnp.arange(n, dtype=jnp.int32)
  valid = pos < num_valid
  primary = jnp.where(valid, -scores, jnp.inf)
  secondary = jnp.where(valid, -tie, jnp.inf)
  _, _, order = jax.lax.sort((primary, secondary, pos), num_keys=3)
  return order[:budget], scores[order[:budget]].astype(jnp.float32)


@jax.jit
def count_nonfinite_rows(arrays: list, num_valid: Array) -> Array:
  """Rows among the first ``num_valid`` where any of ``arrays`` ([P, ...] each) is NaN/inf."""
  bad = None
  for a in arrays:
    rows = ~jnp.isfinite(a.reshape(a.shape[0], -1)).all(-1)
    bad = rows if bad is None else bad | rows
  valid = jnp.arange(bad.shape[0]) < num_valid
  return jnp.sum(valid & bad)
