"""Device-side input pipeline: normalisation and augmentation inside jit.

The whole dataset lives on the accelerator as uint8 (CIFAR-10's train split is 150 MB), so a
training step gathers its batch by index and augments it on device; nothing crosses the host
boundary during an epoch. Random crop (zero padding 4, as torchvision's RandomCrop(32, padding=4))
and horizontal flip are drawn per sample from a PRNG key, so they are the same on any number of
devices.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def channel_sums(images, chunk: int = 4096):
  """Exact per-channel sums of the uint8 values and of their squares, and the values per channel.

  Python ints (exact at any size), read ``chunk`` images at a time: works on memory maps and
  lazily decoded folders without loading them whole.
  """
  n, channels = images.shape[0], images.shape[-1]
  total, squares = [0] * channels, [0] * channels
  for i in range(0, n, chunk):
    x = np.asarray(images[i:min(i + chunk, n)]).reshape(-1, channels).astype(np.int64)
    s, ss = x.sum(0), (x * x).sum(0)  # < 2^63 for chunks of up to ~10^9 values
    total = [t + int(v) for t, v in zip(total, s)]
    squares = [t + int(v) for t, v in zip(squares, ss)]
  return total, squares, n * int(np.prod(images.shape[1:-1]))


def stats_from_sums(total, squares, count) -> tuple[np.ndarray, np.ndarray]:
  """Per-channel mean and std in [0, 1] units (float32) from :func:`channel_sums`'s exact sums."""
  mean = np.array([t / (255 * count) for t in total], np.float64)
  var = np.array([(q * count - t * t) / (255**2 * count**2) for t, q in zip(total, squares)],
                 np.float64)
  return mean.astype(np.float32), np.sqrt(np.maximum(var, 0.0)).astype(np.float32)


def channel_stats(images) -> tuple[np.ndarray, np.ndarray]:
  """Per-channel mean and std of uint8 images, in [0, 1] units (float32)."""
  return stats_from_sums(*channel_sums(images))


def normalize(images: Array, mean: Array, std: Array, dtype=jnp.float32) -> Array:
  """uint8 NHWC -> (x / 255 - mean) / std in ``dtype``."""
  x = images.astype(jnp.float32) / 255.0
  return ((x - mean) / std).astype(dtype)


def crop_flip(image: Array, offset: Array, flip: Array, pad: int = 4) -> Array:
  """The ``[h, w]`` window at ``offset`` (row, col) of the zero-padded image, mirrored if ``flip``."""
  h, w, c = image.shape
  padded = jnp.pad(image, ((pad, pad), (pad, pad), (0, 0)))
  crop = jax.lax.dynamic_slice(padded, (offset[0], offset[1], 0), (h, w, c))
  return jnp.where(flip, crop[:, ::-1], crop)


def draw_crop_flip(key: Array, pad: int = 4) -> tuple[Array, Array]:
  """A uniform offset in ``[0, 2 * pad]^2`` and a fair coin for the flip."""
  k_off, k_flip = jax.random.split(key)
  return jax.random.randint(k_off, (2,), 0, 2 * pad + 1), jax.random.bernoulli(k_flip)


def random_crop_flip(keys: Array, images: Array, pad: int = 4) -> Array:
  """Random crop of the zero-padded image and random horizontal flip, one key per sample.

  ``keys`` is ``[n]`` PRNG keys (e.g. ``jax.random.split(step_key, n)``, or keys folded with the
  dataset index so a sample's view does not depend on how the batch is laid out); uint8 in, out.
  """
  def one(key, image):
    offset, flip = draw_crop_flip(key, pad)
    return crop_flip(image, offset, flip, pad)

  return jax.vmap(one)(keys, images)
