"""Device-side input pipeline: normalisation and augmentation inside jit.

The whole dataset lives on the accelerator as uint8 (:class:`DeviceData`, put there once by
:func:`put_data`; CIFAR-10's train split is 150 MB), so a
training step gathers its batch by index and augments it on device; nothing crosses the host
boundary during an epoch. Random crop (zero padding 4, as torchvision's RandomCrop(32, padding=4))
and horizontal flip are drawn per sample from a PRNG key, so they are the same on any number of
devices.

Feature vectors ``[N, D]`` (``dataset.source=embeddings``) live there in their own dtype (float16
or float32) and are standardised per dimension, ``(x - mean) / std`` with the training split's
mean and (population) std of each dimension, accumulated in float64 over blocks of rows
(:class:`VectorMoments`); a constant dimension gets std 1 (it becomes 0). They are never
augmented (the config refuses ``train.augment`` and ``dispersion.augmented_views`` for them).
"""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.sharding import Mesh

from jaxdisp import parallel

Array = jax.Array


@flax.struct.dataclass
class DeviceData:
  """The dataset on device (uint8 images or float vectors, int32 labels) and its normalisation
  (per channel for images, per dimension for vectors).

  ``train_images`` is replicated, or split along the samples over ``data`` when
  ``dataset.placement`` says so (padded to a multiple of the device count; batches are then
  gathered with :func:`parallel.gather_rows`). Everything else is replicated.
  """
  train_images: Array
  train_labels: Array
  test_images: Array
  test_labels: Array
  mean: Array
  std: Array


def put_data(dataset, mesh: Mesh, shard_train: bool = False) -> DeviceData:
  """Copies a host ``data.Dataset`` to the devices once.

  Replicated, every device holds the training images (CIFAR's are 150 MB). Sharded, each
  device holds ``1 / devices`` of them, each process reads only its own devices' rows, and the
  normalisation statistics are summed exactly over the processes.
  """
  vectors = dataset.train_images.ndim == 2
  if shard_train and vectors:
    moments = VectorMoments(dataset.train_images.shape[1])
    n = dataset.train_images.shape[0]
    images = parallel.put_rows(dataset.train_images, parallel.round_up(n, mesh.size), mesh,
                               on_rows=moments.add)
    mean, std = moments.over_processes().stats()
  elif shard_train:
    n, channels = dataset.train_images.shape[0], dataset.train_images.shape[-1]
    local = [0] * (2 * channels + 1)  # sums, sums of squares, count over this process's rows

    def tally(block):  # each block of real rows as it is loaded (not read twice)
      total, squares, count = channel_sums(block)
      local[:] = [x + y for x, y in zip(local, total + squares + [count])]

    images = parallel.put_rows(dataset.train_images, parallel.round_up(n, mesh.size), mesh,
                               on_rows=tally)
    sums = parallel.sum_over_processes(local)
    mean, std = stats_from_sums(sums[:channels], sums[channels:-1], sums[-1])
    logging.info('process %d holds training images %s of %d', jax.process_index(),
                 ', '.join(f'[{a}, {min(b, n)})' for a, b in parallel.local_row_ranges(images)), n)
  else:
    images = parallel.put_replicated(dataset.train_images, mesh)
    mean, std = (vector_stats if vectors else channel_stats)(dataset.train_images)
  rest = parallel.put_replicated(dict(
      train_labels=dataset.train_labels.astype(np.int32),
      test_images=dataset.test_images, test_labels=dataset.test_labels.astype(np.int32),
      mean=mean, std=std), mesh)
  return DeviceData(train_images=images, **rest)


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


class VectorMoments:
  """Per-dimension count, mean and M2 (sum of squared deviations) of vectors ``[n, D]``, in
  float64, added one block of rows at a time: each block's own two-pass moments, merged by Chan
  et al.'s update (no cancellation, any block sizes)."""

  def __init__(self, dim: int):
    self.n, self.mean, self.m2 = 0, np.zeros(dim, np.float64), np.zeros(dim, np.float64)

  def add(self, block) -> None:
    x = np.asarray(block, np.float64).reshape(-1, self.mean.shape[0])
    if len(x):
      mean = x.mean(0)
      self.merge(len(x), mean, ((x - mean) ** 2).sum(0))

  def merge(self, n: int, mean: np.ndarray, m2: np.ndarray) -> None:
    total = self.n + n
    delta = mean - self.mean
    self.mean = self.mean + delta * (n / total)
    self.m2 = self.m2 + m2 + delta * delta * (self.n * n / total)
    self.n = total

  def over_processes(self) -> 'VectorMoments':
    """The moments of every process's rows (as is, with one process): the float64 values cross
    as int32 pairs, so nothing is rounded on the way whatever ``jax_enable_x64`` says."""
    if jax.process_count() == 1:
      return self
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    mine = np.concatenate([[float(self.n)], self.mean, self.m2]).view(np.int32)
    every = np.asarray(multihost_utils.process_allgather(mine))
    out = VectorMoments(self.mean.shape[0])
    for row in every:
      values = np.ascontiguousarray(row, np.int32).view(np.float64)
      dim = self.mean.shape[0]
      if values[0]:
        out.merge(int(values[0]), values[1:1 + dim], values[1 + dim:])
    return out

  def stats(self) -> tuple[np.ndarray, np.ndarray]:
    """float32 mean and population std per dimension; std 1 where a dimension is constant."""
    std = np.sqrt(self.m2 / max(self.n, 1)).astype(np.float32)
    return self.mean.astype(np.float32), np.where(std > 0, std, np.float32(1.0))


def vector_stats(vectors, chunk_values: int = 1 << 22) -> tuple[np.ndarray, np.ndarray]:
  """:class:`VectorMoments` statistics of ``vectors`` ``[N, D]`` read about ``chunk_values``
  values at a time (32 MB in float64, whatever D; a memory map is never loaded whole)."""
  moments = VectorMoments(vectors.shape[1])
  chunk = max(1, chunk_values // max(1, vectors.shape[1]))
  for i in range(0, vectors.shape[0], chunk):
    moments.add(vectors[i:i + chunk])
  return moments.stats()


def normalize(images: Array, mean: Array, std: Array, dtype=jnp.float32) -> Array:
  """uint8 NHWC images -> (x / 255 - mean) / std; float vectors [B, D] -> (x - mean) / std
  (per dimension); in ``dtype``."""
  x = images.astype(jnp.float32)
  if images.dtype == jnp.uint8:
    x = x / 255.0
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
