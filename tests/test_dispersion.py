"""label_dispersion against an independent NumPy implementation, exactly."""

import collections

import jax.numpy as jnp
import numpy as np
import pytest

import jaxdisp
from jaxdisp import dispersion


def reference(history: np.ndarray, mode_last_k: int = 0, plus_one: bool = False) -> np.ndarray:
  """Column by column with collections.Counter; -1 = not recorded."""
  out = np.zeros(history.shape[1], np.float32)
  for j in range(history.shape[1]):
    seen = [int(v) for v in history[:, j] if v >= 0]
    if not seen:
      continue
    counts = collections.Counter(seen)
    if mode_last_k:
      window = collections.Counter(seen[-mode_last_k:])
      top = max(window.values())
      mode = min(c for c, n in window.items() if n == top)  # ties: smallest class id
      f = counts[mode]
    else:
      f = max(counts.values())
    t = len(seen) + (1 if plus_one else 0)
    out[j] = np.float32(t - f) / np.float32(t)  # = 1 - f/T, one float32 division
  return out


def random_history(rng, t, n, c, p_missing=0.0, concentrate=True):
  # Concentrated draws create many ties in the mode count; missing entries are -1.
  if concentrate:
    base = rng.integers(0, c, n)
    h = np.where(rng.random((t, n)) < 0.6, base, rng.integers(0, c, (t, n)))
  else:
    h = rng.integers(0, c, (t, n))
  h = np.where(rng.random((t, n)) < p_missing, -1, h)
  return h.astype(np.int8 if c <= 127 else np.int16)


@pytest.mark.parametrize('t,n,c,p_missing,concentrate', [
    (100, 500, 10, 0.0, True),
    (25, 800, 10, 0.2, False),
    (100, 300, 100, 0.1, True),
    (7, 1000, 3, 0.3, False),  # tiny T, C: most scores tie
    (40, 200, 100, 0.0, False),
    (97, 700, 10, 0.1, True),  # prime T > 32: the last row group overlaps and is masked
    (300, 300, 5, 0.05, True),  # T > 255: 16-bit counters
])
def test_matches_numpy_reference(t, n, c, p_missing, concentrate):
  rng = np.random.default_rng(t * n + c)
  h = random_history(rng, t, n, c, p_missing, concentrate)
  got = np.asarray(jaxdisp.label_dispersion(jnp.asarray(h), c))
  np.testing.assert_array_equal(got, reference(h))


@pytest.mark.parametrize('block', [1, 128, 1000, 3001, 4096])  # 3001: one block (GPU/TPU)
def test_blocking_does_not_change_the_result(block):
  rng = np.random.default_rng(block)
  h = random_history(rng, 50, 3001, 10, p_missing=0.1)
  np.testing.assert_array_equal(np.asarray(jaxdisp.label_dispersion(h, 10, block=block)),
                                reference(h))


def test_sharded_history_gives_the_same_scores_without_moving_columns():
  from jaxdisp import parallel  # pylint: disable=g-import-not-at-top
  mesh = parallel.make_mesh(4)
  rng = np.random.default_rng(7)
  h = random_history(rng, 30, 4096, 10, p_missing=0.05)
  on_mesh = parallel.put_sharded(h, mesh, axis=1)
  got = dispersion.sharded_label_dispersion(on_mesh, 10, mesh, mode_last_k=5, denominator='T+1')
  assert got.sharding.spec == parallel.sharded(mesh).spec  # split like the pool
  np.testing.assert_array_equal(np.asarray(got), reference(h, mode_last_k=5, plus_one=True))


def test_no_recorded_epoch_scores_zero():
  assert np.asarray(jaxdisp.label_dispersion(np.zeros((0, 5), np.int8), 3)).tolist() == [0] * 5


@pytest.mark.parametrize('denominator', ['T', 'T+1'])
@pytest.mark.parametrize('mode_last_k', [0, 2])
def test_unrecorded_column_scores_zero_under_either_denominator(denominator, mode_last_k):
  # Column 1 has no recorded entry; with 'T+1' it used to score (1 - 0) / (0 + 1) = 1.
  h = np.array([[0, -1, 2],
                [1, -1, 2],
                [1, -1, -1]], np.int8)
  got = np.asarray(jaxdisp.label_dispersion(h, 3, denominator=denominator,
                                            mode_last_k=mode_last_k))
  # Column 0: f = 2 of T = 3; column 2: f = 2 of T = 2 (the window's mode is the same class).
  t0, t2 = (3, 2) if denominator == 'T' else (4, 3)
  f32 = np.float32
  np.testing.assert_array_equal(got, [f32(t0 - 2) / f32(t0), 0.0, f32(t2 - 2) / f32(t2)])
  np.testing.assert_array_equal(got, reference(h, mode_last_k, plus_one=denominator == 'T+1'))


@pytest.mark.parametrize('k', [1, 5, 25])
def test_authors_quirks_match_reference(k):
  rng = np.random.default_rng(k)
  h = random_history(rng, 100, 400, 10, p_missing=0.1)
  got = np.asarray(jaxdisp.label_dispersion(h, 10, mode_last_k=k, denominator='T+1'))
  np.testing.assert_array_equal(got, reference(h, mode_last_k=k, plus_one=True))
  got = np.asarray(jaxdisp.label_dispersion(h, 10, mode_last_k=k))
  np.testing.assert_array_equal(got, reference(h, mode_last_k=k))


def test_known_values():
  h = np.array([[1, 2, -1, 0],
                [1, 3, -1, 0],
                [1, 2, -1, 1],
                [1, 4, -1, 1]], np.int8)
  got = np.asarray(jaxdisp.label_dispersion(h, 5))
  np.testing.assert_array_equal(got, np.float32([0.0, 0.5, 0.0, 0.5]))
  # The authors' denominator: a never-changing sample scores 1/(T+1) (0.0099 for T = 100).
  never = np.zeros((100, 1), np.int8)
  assert float(jaxdisp.label_dispersion(never, 10, denominator='T+1')[0]) == np.float32(1) / np.float32(101)


def test_modal_label_and_changes():
  h = np.array([[0, 2, -1],
                [1, 2, -1],
                [1, -1, -1],
                [0, 3, -1],
                [1, 3, -1]], np.int8)
  np.testing.assert_array_equal(np.asarray(jaxdisp.modal_label(h, 4)), [1, 2, -1])
  # Changes are counted between consecutive *recorded* epochs (the -1 gap is skipped).
  np.testing.assert_array_equal(np.asarray(jaxdisp.label_changes(h)), [3, 1, 0])


def test_last_recorded_rows_skips_unrecorded():
  h = np.array([[5], [6], [-1], [7]], np.int8)
  np.testing.assert_array_equal(np.asarray(dispersion.last_recorded_rows(h, 2))[:, 0],
                                [-1, 6, -1, 7])


def test_bad_denominator():
  with pytest.raises(ValueError):
    jaxdisp.label_dispersion(np.zeros((2, 2), np.int8), 2, denominator='T+2')
