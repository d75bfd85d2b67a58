"""Small score helpers shared by strategies, and the rules that order equal scores.

Uncertainty of probabilities ``[P, C]`` (higher = less sure), and the tie rules of
``Strategy.tie_break``: the secondary key among equal scores at the selection boundary.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

# Rules that order equal scores at the selection boundary (``Strategy.tie_break``).
TIE_RULES = ('random', 'entropy', 'margin', 'kcenter')


def entropy(probs: Array) -> Array:
  return -jnp.sum(jnp.where(probs > 0, probs * jnp.log(probs), 0.0), axis=-1)


def neg_margin(probs: Array) -> Array:
  """Minus the gap between the two most probable classes (higher = less sure)."""
  top2 = jax.lax.top_k(probs, 2)[0]
  return top2[:, 1] - top2[:, 0]


def least_confidence(probs: Array) -> Array:
  return 1.0 - probs.max(-1)


TIE_BREAKS = {'entropy': entropy, 'margin': neg_margin}


def tie_key(rule: str, view, key: Array) -> Array:
  """Secondary key among equal scores of a ``PoolView``: keyed random, or the final model's
  uncertainty. (``kcenter`` is not a key but a selection among the tied group:
  ``rounds.select``.)"""
  if rule == 'random':
    return jax.random.uniform(key, (view.capacity,))
  return TIE_BREAKS[rule](view.outputs['probs'])


def tie_outputs(rule: str) -> tuple[str, ...]:
  """The pool outputs the tie rule reads."""
  return {'random': (), 'kcenter': ('features',)}.get(rule, ('probs',))


def tie_labeled_outputs(rule: str) -> tuple[str, ...]:
  """The labeled-set outputs the tie rule reads (k-center: distances to the labeled set)."""
  return ('features',) if rule == 'kcenter' else ()
