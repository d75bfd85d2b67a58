"""Uncertainty of the round's final model: entropy, smallest margin, least confidence.

Entropy and least confidence: Settles, "Active Learning Literature Survey" (2009); margin:
Scheffer et al., IDA 2001. One pool pass of the final model (eval mode, no augmentation). The
three are also in the pool diagnostics of every run, computed once per round with the scores.
"""

import jax.numpy as jnp

from jaxdisp.strategies import base

_COST = '1 (after training)'


def entropy(view: base.PoolView):
  return view.cached('entropy', lambda: base.entropy(view.outputs['probs']))


def neg_margin(view: base.PoolView):
  return view.cached('neg_margin', lambda: base.neg_margin(view.outputs['probs']))


def least_confidence(view: base.PoolView):
  return view.cached('least_confidence', lambda: base.least_confidence(view.outputs['probs']))


def margin(view: base.PoolView):
  """Top-1 minus top-2 probability (>= 0; abs keeps a tie's 0 positive), the margin strategy's
  score negated."""
  return jnp.abs(neg_margin(view))


# The family's pool diagnostics, in the report's order.
DIAGNOSTICS = (
    base.PoolScore('margin', 'margin', highest=False, compute=margin, outputs=('probs',)),
    base.PoolScore('entropy', 'entropy', highest=True, compute=entropy, outputs=('probs',)),
    base.PoolScore('least_confidence', 'least confidence', highest=True,
                   compute=least_confidence, outputs=('probs',)))

ENTROPY = base.register(base.Strategy(
    name='entropy', summary='predictive entropy of the final model', cost=_COST,
    reference='Settles 2009', outputs=('probs',), score=entropy, diagnostics=DIAGNOSTICS),
    builtin=True)

MARGIN = base.register(base.Strategy(
    name='margin', summary='smallest gap between the two most probable classes', cost=_COST,
    reference='Scheffer et al. 2001', outputs=('probs',), score=neg_margin), builtin=True)

LEAST_CONFIDENCE = base.register(base.Strategy(
    name='least_confidence', summary='1 - max probability', cost=_COST,
    reference='Settles 2009', outputs=('probs',), score=least_confidence), builtin=True)
