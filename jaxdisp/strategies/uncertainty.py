"""Uncertainty of the round's final model: entropy, smallest margin, least confidence.

Entropy and least confidence: Settles, "Active Learning Literature Survey" (2009); margin:
Scheffer et al., IDA 2001. One pool pass of the final model (eval mode, no augmentation).
"""

from jaxdisp.strategies import base

_COST = '1 (after training)'

ENTROPY = base.register(base.Strategy(
    name='entropy', summary='predictive entropy of the final model', cost=_COST,
    reference='Settles 2009', outputs=('probs',),
    score=lambda view: base.entropy(view.outputs['probs'])), builtin=True)

MARGIN = base.register(base.Strategy(
    name='margin', summary='smallest gap between the two most probable classes', cost=_COST,
    reference='Scheffer et al. 2001', outputs=('probs',),
    score=lambda view: base.neg_margin(view.outputs['probs'])), builtin=True)

LEAST_CONFIDENCE = base.register(base.Strategy(
    name='least_confidence', summary='1 - max probability', cost=_COST,
    reference='Settles 2009', outputs=('probs',),
    score=lambda view: base.least_confidence(view.outputs['probs'])), builtin=True)
