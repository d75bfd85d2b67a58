"""Selection of the top ``budget`` pool positions, exact and deterministic on any mesh.

Scores are "higher = query first" and live on device, split over ``data`` like the pool. Label
dispersion takes only T+1 distinct values, so most of a top-k is ties: the order is score
descending, then a secondary key descending (the strategy's tie-break: a keyed random order by
default), then pool position. Padding rows are never selected. One global sort on the device:
only the ``budget`` winners come back to the host, never the score vector.

Two selections are more than a top-k:

* :func:`select_top_kcenter` (``dispersion.tie_break=kcenter``): every position scoring strictly
  above the boundary score (the ``budget``-th highest) is taken, and the rest of the budget comes
  from the tied group at the boundary by k-center greedy on penultimate features, distances to
  the labeled set and to everything already chosen (diversity inside the tie; the authors tried
  dispersion + k-center, Zolfaghari Bengar et al., CAIP 2021). Its kernel,
  :func:`kcenter_greedy`, is also the ``coreset`` strategy's;
* :func:`select_top_balanced` (``al.class_balance=modal|modal_batch``): the budget is split over the
  samples' (modal predicted) classes as a greedy quota, after the class-balanced query of Bengar
  et al., WACV 2022 (their optimisation balances expected class counts; this is the simple
  integer version). ``modal`` takes their quota from the labeled set's counts
  (:func:`cumulative_quota`: the labeled set after the query as balanced as the budget allows);
  ``modal_batch`` splits each batch evenly, ``budget // C`` per class, whatever is labeled.
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


def _order(scores: Array, tie: Array | None, num_valid: Array) -> Array:
  """Pool positions by score descending, then ``tie`` descending, then position; padding last."""
  n = scores.shape[0]
  pos = jnp.arange(n, dtype=jnp.int32)
  valid = pos < num_valid
  keys = [jnp.where(valid, -scores, jnp.inf)]
  if tie is not None:
    keys.append(jnp.where(valid, -tie, jnp.inf))
  return jax.lax.sort((*keys, pos), num_keys=len(keys) + 1)[-1]


def _sq_dist(points: Array, sq: Array, centers: Array) -> Array:
  """``[n, k]`` squared distances from ``points`` (``sq``: their squared norms) to ``centers``."""
  return jnp.maximum(sq[:, None] + jnp.sum(centers**2, -1)[None] - 2 * points @ centers.T, 0)


def kcenter_greedy(feats: Array, candidates: Array, centers: Array, centers_ok: Array,
                   num_picks, size: int, chunk: int = 256) -> tuple[Array, Array]:
  """The k-center greedy kernel: ``num_picks`` rows of ``feats``, each the candidate farthest
  from its nearest center; (their positions, their distances when picked), ``size`` long.

  The centers are the rows of ``centers`` where ``centers_ok`` holds and every row picked so
  far; only rows where ``candidates`` holds are picked (ties of distance: the lowest position).
  The distances to ``centers`` are one running minimum ``[n]`` built a ``chunk`` of centers at a
  time (never an ``n x m`` matrix); each greedy step is one ``O(n F)`` distance row, in the
  dtype of ``feats``. Without centers every candidate starts at distance inf; once the
  candidates run out, a pick is position 0 at distance 0. ``num_picks`` may be traced; the
  outputs past it are 0. Used by ``dispersion.tie_break=kcenter``
  (:func:`select_top_kcenter`) and by the ``coreset`` strategy.
  """
  n = feats.shape[0]
  sq = jnp.sum(feats**2, -1)
  steps = -(-centers.shape[0] // chunk)
  pad = steps * chunk - centers.shape[0]
  centers, centers_ok = jnp.pad(centers, ((0, pad), (0, 0))), jnp.pad(centers_ok, (0, pad))

  def min_over_chunk(best, xs):
    pts, pts_ok = xs
    d = jnp.where(pts_ok[None], _sq_dist(feats, sq, pts), jnp.inf)
    return jnp.minimum(best, d.min(-1)), None

  best, _ = jax.lax.scan(min_over_chunk, jnp.full((n,), jnp.inf),
                         (centers.reshape(steps, chunk, -1), centers_ok.reshape(steps, chunk)))
  best = jnp.where(candidates, best, -1.0)  # -1: not a candidate, or picked already

  def pick(i, carry):
    best, chosen, dists = carry
    j = jnp.argmax(best).astype(jnp.int32)
    d = _sq_dist(feats, sq, feats[j][None])[:, 0]
    dist = jnp.sqrt(jnp.maximum(best[j], 0.0))
    best = jnp.where(best >= 0, jnp.minimum(best, d), best).at[j].set(-1.0)
    return best, chosen.at[i].set(j), dists.at[i].set(dist)

  init = (best, jnp.zeros(size, jnp.int32), jnp.zeros(size, jnp.float32))
  _, chosen, dists = jax.lax.fori_loop(0, num_picks, pick, init)
  return chosen, dists


@functools.partial(jax.jit, static_argnames=('budget', 'chunk'))
def select_top_kcenter(scores: Array, num_valid: Array, pool_feats: Array, labeled_feats: Array,
                       num_labeled: Array, budget: int, chunk: int = 256):
  """Top ``budget`` scores, the tied group at the boundary filled by k-center greedy.

  Let ``s_b`` be the ``budget``-th highest score among the first ``num_valid`` rows. Every row
  scoring above ``s_b`` is taken (``m`` rows, in score order). The other ``k = budget - m`` come
  from the rows scoring exactly ``s_b`` by :func:`kcenter_greedy` on the penultimate features
  (in float32), the centers being the first ``num_labeled`` rows of ``labeled_feats`` and the
  ``m`` rows above. Returns (positions, scores), the ``m`` first.
  """
  n = scores.shape[0]
  pos = jnp.arange(n, dtype=jnp.int32)
  valid = pos < num_valid
  top = _order(scores, None, num_valid)[:budget]
  boundary = scores[top[budget - 1]]
  above = jnp.sum(valid & (scores > boundary)).astype(jnp.int32)  # = the first m of ``top``
  tied = valid & (scores == boundary)

  pool_feats = pool_feats.astype(jnp.float32)
  centers = jnp.concatenate([labeled_feats.astype(jnp.float32), pool_feats[top]])
  ok = jnp.concatenate([jnp.arange(labeled_feats.shape[0]) < num_labeled,
                        jnp.arange(budget) < above])
  picks, _ = kcenter_greedy(pool_feats, tied, centers, ok, budget - above, budget, chunk)
  i = jnp.arange(budget)
  positions = jnp.where(i < above, top, picks[jnp.maximum(i - above, 0)])
  return positions, scores[positions].astype(jnp.float32)


@functools.partial(jax.jit, static_argnames=('num_classes',))
def class_counts(labels: Array, ids: Array, num_ids, num_classes: int) -> Array:
  """int32 ``[C]``: the classes of ``labels[ids[:num_ids]]`` counted (``ids`` padded)."""
  real = jnp.arange(ids.shape[0]) < num_ids
  picked = jnp.where(real, labels[ids], num_classes)
  return jnp.zeros(num_classes + 1, jnp.int32).at[picked].add(1)[:num_classes]


def cumulative_quota(labeled_counts, budget: int):
  """Bengar et al. (WACV 2022)'s quota: ``Omega_c = max(0, floor((n + b) / C) - n_c)``, with
  ``n_c`` the labels of class c already held, ``n = sum n_c`` and ``b`` the budget, so that the
  labeled set after the query is as balanced as the budget allows (their
  ``floor((2b + (k+1) b) / C) - n_c``, whose initial set is 2b). Integer ``[C]``."""
  counts = jnp.asarray(labeled_counts, jnp.int32)
  target = (jnp.sum(counts) + budget) // counts.shape[0]
  return jnp.maximum(target - counts, 0)


@functools.partial(jax.jit, static_argnames=('budget', 'num_classes'))
def select_top_balanced(scores: Array, tie: Array, classes: Array, num_valid: Array, budget: int,
                        num_classes: int, quota: Array | None = None):
  """``budget`` rows split over ``classes`` by a greedy quota.

  Rows are ranked as :func:`select_top` ranks them (score, then ``tie``, descending; then
  position). Class ``c`` in ``[0, num_classes)`` gets the quota ``q_c``: ``quota[c]`` (int
  ``[C]``, e.g. :func:`cumulative_quota`), or ``budget // num_classes`` for every class without
  it; its ``min(q_c, n_c)`` best-ranked rows are taken, and if those exceed the budget, the
  ``budget`` best-ranked of them. The rest of the budget -- the remainder and the shortfall of
  classes with fewer than ``q_c`` rows -- goes to the best-ranked rows not taken yet, of any
  class. A row whose class is outside ``[0, C)`` gets no quota but may fill. Two sorts and
  integer counts on device: exact and independent of the mesh. Returns (positions, scores) in
  rank order.
  """
  n = scores.shape[0]
  order = _order(scores, tie, num_valid)  # rank -> position
  rank = jnp.arange(n, dtype=jnp.int32)
  valid_rank = rank < num_valid  # valid rows rank first
  cls = classes.astype(jnp.int32)[order]
  cls = jnp.where(valid_rank & (cls >= 0) & (cls < num_classes), cls, num_classes)
  _, by_class = jax.lax.sort((cls, rank), num_keys=2)  # ranks grouped by class, best first
  counts = jnp.zeros(num_classes + 1, jnp.int32).at[cls].add(1)
  start = jnp.cumsum(counts) - counts
  cls_sorted = cls[by_class]
  within = rank - start[cls_sorted]  # rank of the row inside its class
  if quota is None:
    quota = jnp.full(num_classes, budget // num_classes, jnp.int32)
  limit = jnp.concatenate([quota.astype(jnp.int32), jnp.zeros(1, jnp.int32)])  # unknown: 0
  in_quota = within < limit[cls_sorted]
  taken = jnp.zeros(n, bool).at[by_class].set(in_quota)
  taken = taken & (jnp.cumsum(taken) <= budget)  # quotas over the budget: the best-ranked
  rest = valid_rank & ~taken
  need = budget - jnp.sum(taken)
  chosen = taken | (rest & (jnp.cumsum(rest) <= need))
  ranks = jnp.nonzero(chosen, size=budget)[0]
  positions = order[ranks]
  return positions, scores[positions].astype(jnp.float32)
