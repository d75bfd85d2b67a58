"""BADGE against a plain NumPy k-means++ on explicit gradient embeddings; 1 vs 4 devices; config."""

import jax
import numpy as np
import pytest

from _helpers import tiny_config
from jaxdisp import config_checks, parallel
from jaxdisp.errors import ConfigError
from jaxdisp.strategies import badge


def numpy_badge(probs, feats, uniforms, budget, first_center='max_norm'):
  """The original formulation, written plainly: explicit [N, C*d] embeddings g = (p - e_yhat)
  (x) h, k-means++ seeding with D^2 sampling by inverse CDF from the given uniforms."""
  probs, feats = probs.astype(np.float64), feats.astype(np.float64)
  n, c = probs.shape
  a = probs - np.eye(c)[probs.argmax(1)]
  g = np.einsum('nc,nd->ncd', a, feats).reshape(n, -1)

  def draw(w, u):
    cum = np.cumsum(w)
    return int(np.sum(cum <= u * cum[-1]))

  if first_center == 'max_norm':
    first = int(np.argmax((g**2).sum(1)))
  else:
    first = draw(np.ones(n), uniforms[0])
  chosen, dists = [first], [np.sqrt((g[first]**2).sum())]
  d2 = ((g - g[first])**2).sum(1)
  d2[first] = 0
  for s in range(1, budget):
    w = d2 if d2.sum() > 0 else np.isin(np.arange(n), chosen, invert=True).astype(float)
    j = draw(w, uniforms[s])
    assert j not in chosen
    chosen.append(j)
    dists.append(np.sqrt(d2[j]))
    d2 = np.minimum(d2, ((g - g[j])**2).sum(1))
    d2[chosen] = 0
  return np.array(chosen), np.array(dists)


def tiny_pool(seed, n=200, capacity=256, c=5, d=7):
  """Probabilities (some rows nearly certain), features, and far-away padding rows."""
  rng = np.random.default_rng(seed)
  logits = rng.normal(size=(capacity, c)) * rng.choice([0.5, 3.0, 12.0], size=(capacity, 1))
  probs = np.exp(logits - logits.max(1, keepdims=True))
  probs = (probs / probs.sum(1, keepdims=True)).astype(np.float32)
  feats = np.abs(rng.normal(size=(capacity, d))).astype(np.float32)
  feats[n:] = 100.0  # padding: the largest embeddings by far, never to be chosen
  probs[n:] = 1.0 / c
  return probs, feats


def run_badge(probs, feats, n, uniforms, budget, mesh, first_center='max_norm'):
  a = badge.gradient_factors(parallel.put_sharded(probs, mesh))
  pos, dists = badge.kmeanspp_seeding(a, parallel.put_sharded(feats, mesh), np.int32(n),
                                      uniforms, budget=budget, mesh=mesh,
                                      first_center=first_center)
  return np.asarray(pos), np.asarray(dists)


N, BUDGET = 200, 25


def test_badge_matches_numpy_kmeanspp_on_explicit_embeddings_on_1_and_4_devices():
  probs, feats = tiny_pool(0)
  uniforms = badge.step_uniforms(jax.random.PRNGKey(3), BUDGET)
  want, want_d = numpy_badge(probs[:N], feats[:N], np.asarray(uniforms, np.float64), BUDGET)
  got = {}
  for devices in (1, 4):
    got[devices] = run_badge(probs, feats, N, uniforms, BUDGET, parallel.make_mesh(devices))
    np.testing.assert_array_equal(got[devices][0], want)
    np.testing.assert_allclose(got[devices][1], want_d, rtol=2e-4, atol=1e-5)
  # The same picks and bit-identical distances on 1 and 4 devices.
  np.testing.assert_array_equal(got[1][0], got[4][0])
  np.testing.assert_array_equal(got[1][1], got[4][1])
  assert len(set(want.tolist())) == BUDGET and want.max() < N  # no repeats, no padding
  assert want[0] == np.argmax(np.abs(badge.gradient_factors(probs[:N]) ** 2).sum(1)
                              * (feats[:N] ** 2).sum(1))


def test_badge_random_first_center_matches_numpy():
  """badge.first_center='random' (standard k-means++): the first pick is uniform too."""
  probs, feats = tiny_pool(1)
  uniforms = badge.step_uniforms(jax.random.PRNGKey(4), BUDGET)
  want, want_d = numpy_badge(probs[:N], feats[:N], np.asarray(uniforms, np.float64), BUDGET,
                             'random')
  got, got_d = run_badge(probs, feats, N, uniforms, BUDGET, parallel.make_mesh(4), 'random')
  np.testing.assert_array_equal(got, want)
  np.testing.assert_allclose(got_d, want_d, rtol=2e-4, atol=1e-5)


def test_badge_without_gradients_draws_uniformly_among_the_unchosen():
  """A model certain of every sample (p one-hot, so every embedding is 0): no D^2 to sample by,
  so every draw after the first is uniform over the samples not chosen yet."""
  probs, feats = tiny_pool(2)
  probs = np.eye(probs.shape[1], dtype=np.float32)[np.arange(len(probs)) % probs.shape[1]]
  uniforms = badge.step_uniforms(jax.random.PRNGKey(0), BUDGET)
  got, dists = run_badge(probs, feats, N, uniforms, BUDGET, parallel.make_mesh(4))
  want, _ = numpy_badge(probs[:N], feats[:N], np.asarray(uniforms, np.float64), BUDGET)
  np.testing.assert_array_equal(got, want)
  assert got[0] == 0 and len(set(got.tolist())) == BUDGET and got.max() < N
  assert not dists.any()


@pytest.mark.parametrize('overrides, message', [
    ({'badge.first_center': 'median'},
     "badge.first_center='median' must be 'max_norm' or 'random'"),
])
def test_bad_badge_values_are_refused_in_one_line(overrides, message):
  with pytest.raises(ConfigError) as e:
    config_checks.validate(tiny_config(strategy='badge', **overrides))
  assert str(e.value) == message
  config_checks.validate(tiny_config(strategy='badge'))


def test_badge_outputs_are_nan_guarded_by_the_core():
  """BADGE selects a batch (no score vector): the core counts non-finite rows of the outputs
  it declares, probabilities and features, before selecting (padding rows do not count)."""
  from jaxdisp import selection, strategies  # pylint: disable=g-import-not-at-top
  assert strategies.get('badge').outputs == ('probs', 'features')
  probs, feats = tiny_pool(3)
  feats[7, 2] = np.nan
  feats[N + 1] = np.inf  # padding
  assert int(selection.count_nonfinite_rows([probs, feats], np.int32(N))) == 1
