"""Core-set: k-center greedy on penultimate features (Sener & Savarese, ICLR 2018).

The greedy 2-approximation of the paper (no robust MIP): each step adds the pool point farthest
from the labeled set and everything chosen so far. Distances to the labeled set are taken a
chunk at a time and the running minimum is one ``[N]`` row: never an N x N matrix.
"""

import functools

import jax
import jax.numpy as jnp

from jaxdisp.strategies import base

Array = jax.Array


@functools.partial(jax.jit, static_argnames=('budget', 'chunk'))
def kcenter_greedy(pool_feats: Array, num_pool: Array, labeled_feats: Array,
                   num_labeled: Array, budget: int, chunk: int = 256) -> tuple[Array, Array]:
  """(positions, their distance when chosen) of ``budget`` k-center greedy steps."""
  n = pool_feats.shape[0]
  pool_ok = jnp.arange(n) < num_pool
  sq = jnp.sum(pool_feats**2, -1)

  def dist_to(points):  # [n, k] squared distances from the pool to ``points`` [k, F]
    return jnp.maximum(sq[:, None] + jnp.sum(points**2, -1)[None] - 2 * pool_feats @ points.T, 0)

  m = labeled_feats.shape[0]
  steps = -(-m // chunk)
  padded = jnp.pad(labeled_feats, ((0, steps * chunk - m), (0, 0)))
  lab_ok = jnp.arange(steps * chunk) < num_labeled

  def min_over_chunk(best, xs):
    pts, ok = xs
    return jnp.minimum(best, jnp.where(ok[None], dist_to(pts), jnp.inf).min(-1)), None

  best, _ = jax.lax.scan(min_over_chunk, jnp.full((n,), jnp.inf),
                         (padded.reshape(steps, chunk, -1), lab_ok.reshape(steps, chunk)))

  def pick(i, carry):
    best, chosen, dists = carry
    cand = jnp.where(pool_ok, best, -1.0)
    j = jnp.argmax(cand).astype(jnp.int32)
    best = jnp.minimum(best, dist_to(pool_feats[j][None])[:, 0]).at[j].set(-1.0)
    return best, chosen.at[i].set(j), dists.at[i].set(jnp.sqrt(jnp.maximum(cand[j], 0.0)))

  init = (best, jnp.zeros(budget, jnp.int32), jnp.zeros(budget, jnp.float32))
  _, chosen, dists = jax.lax.fori_loop(0, budget, pick, init)
  return chosen, dists


def select(view: base.PoolView, budget: int):
  return kcenter_greedy(view.outputs['features'], view.num_pool,
                        view.labeled_outputs['features'], view.num_labeled, budget)


STRATEGY = base.register(base.Strategy(
    name='coreset', summary='k-center greedy on penultimate features',
    reference='Sener & Savarese, ICLR 2018 (greedy version)',
    cost='1 over pool + labeled set (features, after training) + k-center greedy',
    outputs=('features',), labeled_outputs=('features',), select=select), builtin=True)
