"""Augmentation and normalisation against NumPy references on a known image."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np

from jaxdisp import input_pipeline


def known_image(h=8, w=8, c=3):
  # Every pixel value is distinct (mod 256 is fine at this size), so crops are identifiable.
  return (np.arange(h * w * c).reshape(h, w, c) % 251 + 1).astype(np.uint8)


def numpy_crop_flip(img, dy, dx, flip, pad=4):
  h, w, _ = img.shape
  padded = np.zeros((h + 2 * pad, w + 2 * pad, img.shape[2]), img.dtype)
  padded[pad:pad + h, pad:pad + w] = img
  out = padded[dy:dy + h, dx:dx + w]
  return out[:, ::-1] if flip else out


def test_crop_flip_matches_numpy_exactly():
  img = known_image()
  for dy, dx, flip in itertools.product(range(9), range(9), (False, True)):
    got = np.asarray(input_pipeline.crop_flip(jnp.asarray(img), jnp.array([dy, dx]),
                                              jnp.bool_(flip)))
    np.testing.assert_array_equal(got, numpy_crop_flip(img, dy, dx, flip))


def test_random_crop_flip_shapes_and_each_view_is_a_valid_crop():
  img = known_image()
  n = 400
  images = jnp.asarray(np.broadcast_to(img, (n, *img.shape)))
  keys = jax.random.split(jax.random.key(0), n)
  out = np.asarray(input_pipeline.random_crop_flip(keys, images))
  assert out.shape == images.shape and out.dtype == np.uint8
  views = {numpy_crop_flip(img, dy, dx, f).tobytes(): (dy, dx, f)
           for dy, dx, f in itertools.product(range(9), range(9), (False, True))}
  seen = [views[o.tobytes()] for o in out]  # KeyError = not a valid crop/flip
  # Offsets cover the whole range and both flips occur (uniform draws, 400 samples).
  assert {s[0] for s in seen} == set(range(9)) and {s[1] for s in seen} == set(range(9))
  assert 0.35 < np.mean([s[2] for s in seen]) < 0.65
  # Each sample uses its own key: the views match draw_crop_flip for that key.
  for k, o in zip(keys[:20], out[:20]):
    offset, flip = input_pipeline.draw_crop_flip(k)
    np.testing.assert_array_equal(o, numpy_crop_flip(img, *np.asarray(offset), bool(flip)))


def test_same_keys_same_views():
  images = jnp.asarray(np.broadcast_to(known_image(), (16, 8, 8, 3)))
  keys = jax.random.split(jax.random.key(3), 16)
  a = input_pipeline.random_crop_flip(keys, images)
  b = input_pipeline.random_crop_flip(keys, images)
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_normalize_matches_numpy():
  img = known_image()[None]
  mean, std = input_pipeline.channel_stats(img)
  np.testing.assert_allclose(mean, img.reshape(-1, 3).mean(0) / 255, rtol=1e-6)
  got = np.asarray(input_pipeline.normalize(jnp.asarray(img), mean, std))
  want = (img.astype(np.float64) / 255 - mean) / std
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  assert got.dtype == np.float32
  assert input_pipeline.normalize(jnp.asarray(img), mean, std, jnp.bfloat16).dtype == jnp.bfloat16
