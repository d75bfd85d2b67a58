"""Random sampling: a keyed uniformly random subset of the pool (the baseline of every plot)."""

import jax

from jaxdisp.strategies import base


def score(view: base.PoolView):
  return jax.random.uniform(view.key, (view.capacity,))


STRATEGY = base.register(base.Strategy(
    name='random', summary='a keyed uniformly random subset', cost='0', score=score),
    builtin=True)
