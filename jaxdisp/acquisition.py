"""Acquisition: score the unlabeled pool with a strategy and select the top ``budget``.

Scores are "higher = query first" and live on device, split over the ``data`` axis like the pool.
Selection is a global sort with a deterministic, documented tie-break: label dispersion takes
only T+1 distinct values, so most of a top-k is ties. Ties are broken by a secondary key
(``dispersion.tie_break``: a keyed random order by default, or the final model's entropy /
smallest margin), then by pool position. Padding rows are never selected, and a NaN score stops
the round instead of being selected (or silently skipped).

Strategies (``config.strategy``):

==================  ==========================================================================
dispersion          label dispersion over the per-epoch prediction history (the paper)
random              a keyed uniformly random subset
entropy             predictive entropy of the final model
margin              smallest gap between the two most probable classes
least_confidence    1 - max probability
bald                mutual information over Monte-Carlo dropout passes of the head
coreset             k-center greedy on penultimate features (chunked distances, no N x N)
==================  ==========================================================================
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxdisp import dispersion as disp, parallel
from jaxdisp.errors import JaxdispError

Array = jax.Array


class NumericalError(JaxdispError):
  """Scores or losses that are NaN or infinite."""


@dataclasses.dataclass(frozen=True)
class Selection:
  """What one round queried: pool positions in selection order, with their scores."""
  positions: np.ndarray  # int [budget], into the round's pool buffer
  scores: np.ndarray  # float32 [budget]


def entropy(probs: Array) -> Array:
  return -jnp.sum(jnp.where(probs > 0, probs * jnp.log(probs), 0.0), axis=-1)


def neg_margin(probs: Array) -> Array:
  top2 = jax.lax.top_k(probs, 2)[0]
  return top2[:, 1] - top2[:, 0]


def least_confidence(probs: Array) -> Array:
  return 1.0 - probs.max(-1)


@functools.partial(jax.jit, static_argnames=('budget',))
def select_top(scores: Array, tie: Array, num_valid: Array, budget: int) -> tuple[Array, Array]:
  """Positions of the ``budget`` highest scores among the first ``num_valid`` rows, and scores.

  Order: score descending, then ``tie`` descending, then position ascending. One global sort on
  the device: only the ``budget`` winners come back to the host, never the score vector.
  """
  n = scores.shape[0]
  pos = jnp.arange(n, dtype=jnp.int32)
  valid = pos < num_valid
  primary = jnp.where(valid, -scores, jnp.inf)
  secondary = jnp.where(valid, -tie, jnp.inf)
  _, _, order = jax.lax.sort((primary, secondary, pos), num_keys=3)
  return order[:budget], scores[order[:budget]].astype(jnp.float32)


@jax.jit
def _count_nonfinite(scores: Array, num_valid: Array) -> Array:
  valid = jnp.arange(scores.shape[0]) < num_valid
  return jnp.sum(valid & ~jnp.isfinite(scores))


@functools.partial(jax.jit, static_argnames=('budget', 'chunk'))
def kcenter_greedy(pool_feats: Array, num_pool: Array, labeled_feats: Array,
                   num_labeled: Array, budget: int, chunk: int = 256) -> tuple[Array, Array]:
  """k-center greedy (Sener & Savarese 2018) without an N x N matrix.

  Distances to the labeled set are taken ``chunk`` labeled points at a time; then ``budget``
  greedy steps each add the pool point farthest from everything chosen so far and update the
  running minimum distance with one ``[N]`` row. Returns (positions, their distance when chosen).
  """
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


def pool_scores(cfg, trainer, train_state, data, history, pool, num_pool, key,
                num_classes: int) -> Array:
  """Per-pool-position scores (higher = query first) for every strategy except coreset."""
  strategy = cfg.strategy
  if strategy == 'dispersion':
    d = cfg.dispersion
    return disp.sharded_label_dispersion(history, num_classes, trainer.mesh,
                                         mode_last_k=d.mode_last_k, denominator=d.denominator)
  if strategy == 'random':
    return jax.random.uniform(key, pool.shape)
  if strategy == 'bald':
    return trainer.pool_outputs(train_state, data, pool, num_pool, key, outputs=('bald',))['bald']
  probs = trainer.pool_outputs(train_state, data, pool, num_pool, key, outputs=('probs',))['probs']
  return {'entropy': entropy, 'margin': neg_margin,
          'least_confidence': least_confidence}[strategy](probs)


def tie_break_key(cfg, trainer, train_state, data, pool, num_pool, key) -> Array:
  """Secondary key among equal scores: keyed random, or the final model's uncertainty."""
  rule = cfg.dispersion.tie_break if cfg.strategy == 'dispersion' else 'random'
  if rule == 'random':
    return jax.random.uniform(key, pool.shape)
  probs = trainer.pool_outputs(train_state, data, pool, num_pool, key, outputs=('probs',))['probs']
  return entropy(probs) if rule == 'entropy' else neg_margin(probs)


def check_finite(scores: Array, num_valid: int, what: str) -> None:
  bad = int(_count_nonfinite(scores, num_valid))  # counted on the device: one scalar comes back
  if bad:
    raise NumericalError(f'{bad} of {num_valid} {what} scores are NaN/inf; refusing to select '
                         '(the model diverged: lower train.learning_rate)')


def score_key(key: Array) -> Array:
  """The key of the scoring pass (MC dropout) derived from a round's acquisition key."""
  return jax.random.split(key)[0]


def acquire(cfg, trainer, train_state, data, history, pool, num_pool, labeled, num_labeled,
            key, num_classes: int) -> Selection:
  """Scores the pool with ``cfg.strategy`` and selects ``cfg.al.budget`` positions."""
  budget = min(cfg.al.budget, int(num_pool))
  k_score, k_tie = score_key(key), jax.random.split(key)[1]
  if cfg.strategy == 'coreset':
    outs = dict(outputs=('features',))
    pool_f = trainer.pool_outputs(train_state, data, pool, num_pool, k_score, **outs)['features']
    lab_f = trainer.pool_outputs(train_state, data, labeled, num_labeled, k_score,
                                 **outs)['features']
    check_finite(pool_f.sum(-1), int(num_pool), 'coreset feature')
    positions, scores = kcenter_greedy(pool_f, num_pool, lab_f, num_labeled, budget)
    return Selection(parallel.to_host(positions), parallel.to_host(scores).astype(np.float32))
  scores = pool_scores(cfg, trainer, train_state, data, history, pool, num_pool, k_score,
                       num_classes)
  check_finite(scores, int(num_pool), cfg.strategy)
  tie = tie_break_key(cfg, trainer, train_state, data, pool, num_pool, k_tie)
  positions, top_scores = select_top(scores, tie, num_pool, budget)
  return Selection(parallel.to_host(positions), parallel.to_host(top_scores))


def pool_diagnostics(cfg, trainer, train_state, data, history, pool, num_pool, key,
                     num_classes: int) -> dict:
  """Per-pool-sample dispersion, margin, entropy (and BALD) of a round's model, for reports.

  ``correct`` compares the final model's prediction with the dataset's label. One extra pool
  forward pass; arrays are trimmed to the ``num_pool`` real samples and returned on the host.
  Pass the acquisition's :func:`score_key` so BALD's dropout samples are the ones it selected on.
  """
  outputs = ('probs', 'bald') if cfg.model.dropout > 0 else ('probs',)
  out = trainer.pool_outputs(train_state, data, pool, num_pool, key, outputs=outputs)
  n = int(num_pool)
  # Post-processing on the host: small, and no further sharded programs in flight.
  probs = parallel.to_host(out['probs'])[:n].astype(np.float64)
  top2 = -np.sort(-probs, axis=-1)[:, :2]
  labels = parallel.to_host(data.train_labels)[parallel.to_host(pool)[:n]]
  plogp = np.where(probs > 0, probs * np.log(np.where(probs > 0, probs, 1.0)), 0.0)
  diag = {'margin': (top2[:, 0] - top2[:, 1]).astype(np.float32),
          'entropy': (-plogp.sum(-1)).astype(np.float32),
          'correct': probs.argmax(-1) == labels}
  if history.shape[0]:
    d = cfg.dispersion
    diag['dispersion'] = parallel.to_host(disp.sharded_label_dispersion(
        history, num_classes, trainer.mesh, mode_last_k=d.mode_last_k,
        denominator=d.denominator))[:n]
  else:
    diag['dispersion'] = np.full((n,), np.nan, np.float32)
  if 'bald' in out:
    diag['bald'] = parallel.to_host(out['bald'])[:n]
  return diag
