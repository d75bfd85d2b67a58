"""Selection, the strategies' scores against NumPy references, and the strategy registry."""

import jax.numpy as jnp
import numpy as np

from jaxdisp import parallel, selection, strategies
from jaxdisp.strategies.coreset import kcenter_greedy


def test_select_top_orders_by_score_then_tie_then_position():
  scores = np.float32([0.5, 0.9, 0.5, 0.5, 0.9, 0.1, 0.99, 0.99])
  tie = np.float32([0.1, 0.2, 0.9, 0.9, 0.3, 0.5, 0.0, 0.0])
  num_valid = 6  # rows 6, 7 are padding: never selected although their scores are highest
  got, got_scores = selection.select_top(scores, tie, num_valid, 5)
  # 0.9s: tie 0.3 (4) before 0.2 (1); 0.5s: tie 0.9 (2, 3: position order), then 0.1 (0).
  np.testing.assert_array_equal(np.asarray(got), [4, 1, 2, 3, 0])
  np.testing.assert_array_equal(np.asarray(got_scores), scores[[4, 1, 2, 3, 0]])


def test_select_top_on_sharded_scores_matches_numpy_lexsort():
  mesh = parallel.make_mesh(4)
  rng = np.random.default_rng(0)
  n, valid, k = 4096, 3900, 250
  scores = (rng.integers(0, 11, n) / 10).astype(np.float32)  # 11 values: mostly ties
  tie = rng.random(n).astype(np.float32)
  got = selection.select_top(parallel.put_sharded(scores, mesh),
                               parallel.put_sharded(tie, mesh), jnp.int32(valid), k)[0]
  order = np.lexsort((np.arange(valid), -tie[:valid], -scores[:valid]))
  np.testing.assert_array_equal(np.asarray(got), order[:k])


def test_uncertainty_scores_match_numpy():
  rng = np.random.default_rng(1)
  p = rng.dirichlet(np.ones(5), 64).astype(np.float32)
  np.testing.assert_allclose(strategies.entropy(p), -(p * np.log(p)).sum(1), rtol=1e-5)
  s = np.sort(p, 1)
  np.testing.assert_allclose(strategies.neg_margin(p), s[:, -2] - s[:, -1], rtol=1e-6)
  np.testing.assert_allclose(strategies.least_confidence(p), 1 - s[:, -1], rtol=1e-6)


def numpy_kcenter(pool, labeled, budget):
  d = ((pool[:, None] - labeled[None]) ** 2).sum(-1).min(1)
  chosen = []
  for _ in range(budget):
    j = int(np.argmax(d))
    chosen.append(j)
    d = np.minimum(d, ((pool - pool[j]) ** 2).sum(-1))
    d[j] = -1
  return chosen


def test_kcenter_greedy_matches_numpy_and_ignores_padding():
  rng = np.random.default_rng(2)
  pool = rng.normal(size=(300, 8)).astype(np.float32)
  labeled = rng.normal(size=(70, 8)).astype(np.float32)
  pool_padded = np.concatenate([pool, 100 + np.zeros((20, 8), np.float32)])  # far-away padding
  lab_padded = np.concatenate([labeled, np.zeros((30, 8), np.float32)])
  chosen, dists = kcenter_greedy(pool_padded, jnp.int32(300), lab_padded,
                                             jnp.int32(70), 12, chunk=32)
  np.testing.assert_array_equal(np.asarray(chosen), numpy_kcenter(pool, labeled, 12))
  assert np.all(np.diff(np.asarray(dists)) <= 1e-5)  # farthest-first: non-increasing


def numpy_kcenter_among(feats, candidates, centers, picks):
  """Plain k-center greedy in float64: ``picks`` of the ``candidates`` positions, each the one
  farthest from its nearest center (``centers`` and the picks so far); ties: lowest position."""
  feats, centers = feats.astype(np.float64), centers.astype(np.float64)
  d = {i: min([((feats[i] - c) ** 2).sum() for c in centers], default=np.inf) for i in candidates}
  chosen = []
  for _ in range(picks):
    j = max((i for i in candidates if i not in chosen), key=lambda i: (d[i], -i))
    chosen.append(j)
    d = {i: min(d[i], ((feats[i] - feats[j]) ** 2).sum()) for i in candidates}
  return chosen


def test_coreset_and_kcenter_tie_break_share_one_kcenter_greedy():
  """Both uses of the one kernel against one NumPy k-center greedy: coreset over the pool from
  the labeled set; tie_break=kcenter over the tied rows from the labeled set and the rows above.
  With every score tied, the two select the same ids."""
  rng = np.random.default_rng(7)
  n, valid, budget = 120, 111, 15
  feats = rng.normal(size=(n, 6)).astype(np.float32)
  labeled = rng.normal(size=(40, 6)).astype(np.float32)
  for num_labeled in (0, 33):
    expected = numpy_kcenter_among(feats, range(valid), labeled[:num_labeled], budget)
    chosen, _ = kcenter_greedy(feats, jnp.int32(valid), labeled, jnp.int32(num_labeled), budget,
                               chunk=16)
    tied = np.full(n, 0.5, np.float32)
    pos, _ = selection.select_top_kcenter(tied, jnp.int32(valid), feats, labeled,
                                          jnp.int32(num_labeled), budget, chunk=16)
    assert np.asarray(chosen).tolist() == np.asarray(pos).tolist() == expected
    scores = rng.integers(0, 12, n).astype(np.float32) / 11  # some rows above, a tie to split
    order = sorted(range(valid), key=lambda i: (-scores[i], i))
    boundary = scores[order[budget - 1]]
    above = [i for i in order if scores[i] > boundary]
    tied_rows = [i for i in range(valid) if scores[i] == boundary]
    assert above and len(tied_rows) > budget - len(above)
    centers = np.concatenate([labeled[:num_labeled], feats[above]])
    pos, _ = selection.select_top_kcenter(scores, jnp.int32(valid), feats, labeled,
                                          jnp.int32(num_labeled), budget, chunk=16)
    assert np.asarray(pos).tolist() == above + numpy_kcenter_among(
        feats, tied_rows, centers, budget - len(above))


def test_nonfinite_rows_are_counted_and_padding_is_ignored():
  scores = jnp.array([0.1, jnp.nan, 0.3, jnp.inf])
  feats = jnp.array([[0.0, 1.0], [1.0, 2.0], [jnp.nan, 0.0], [0.0, 0.0]])
  assert int(selection.count_nonfinite_rows([scores], 4)) == 2
  assert int(selection.count_nonfinite_rows([scores], 1)) == 0  # rows past num_valid: padding
  assert int(selection.count_nonfinite_rows([scores, feats], 3)) == 2  # a row counts once
