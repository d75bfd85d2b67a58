"""Core-set: k-center greedy on penultimate features (Sener & Savarese, ICLR 2018).

The greedy 2-approximation of the paper (no robust MIP): each step adds the pool point farthest
from the labeled set and everything chosen so far. The kernel is the one of
``dispersion.tie_break=kcenter`` (:func:`jaxdisp.selection.kcenter_greedy`): distances to the
labeled set are taken a chunk at a time and the running minimum is one ``[N]`` row, never an
N x N matrix.
"""

import functools

import jax
import jax.numpy as jnp

from jaxdisp import selection
from jaxdisp.strategies import base

Array = jax.Array


@functools.partial(jax.jit, static_argnames=('budget', 'chunk'))
def kcenter_greedy(pool_feats: Array, num_pool: Array, labeled_feats: Array,
                   num_labeled: Array, budget: int, chunk: int = 256) -> tuple[Array, Array]:
  """(positions, their distance when chosen) of ``budget`` k-center greedy steps over the first
  ``num_pool`` rows, the first ``num_labeled`` labeled rows the initial centers
  (:func:`jaxdisp.selection.kcenter_greedy`)."""
  n = pool_feats.shape[0]
  return selection.kcenter_greedy(pool_feats, jnp.arange(n) < num_pool, labeled_feats,
                                  jnp.arange(labeled_feats.shape[0]) < num_labeled, budget,
                                  budget, chunk)


def select(view: base.PoolView, budget: int):
  return kcenter_greedy(view.outputs['features'], view.num_pool,
                        view.labeled_outputs['features'], view.num_labeled, budget)


STRATEGY = base.register(base.Strategy(
    name='coreset', summary='k-center greedy on penultimate features',
    reference='Sener & Savarese, ICLR 2018 (greedy version)',
    cost='1 over pool + labeled set (features, after training) + k-center greedy',
    outputs=('features',), labeled_outputs=('features',), select=select), builtin=True)
