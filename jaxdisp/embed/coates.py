"""Coates, Lee & Ng (AISTATS 2011) single-layer K-means features: 6x6 patches normalised and
ZCA-whitened, K-means centroids, the "triangle" encoding and sum-pooling over 4 quadrants (the
steps are described in :mod:`jaxdisp.embed`). Each function works on NumPy or ``jax.numpy``
arrays; the per-image work is one compiled function over a chunk of images.
"""

from __future__ import annotations

import functools

import numpy as np

RF = 6  # receptive field: 6x6 patches
NORM_EPS = 10.0  # brightness/contrast normalisation: (x - mean) / sqrt(var + 10), 0..255 units
ZCA_EPS = 0.1  # ZCA whitening: V diag(1 / sqrt(eig + 0.1)) V^T
# Independent random streams of one --seed.
SUBSET_TRAIN, SUBSET_TEST, PATCHES, INIT = range(4)


def rng(seed: int, stream: int) -> np.random.Generator:
  """The random generator of one stream of ``seed`` (the streams above)."""
  return np.random.default_rng(np.random.SeedSequence([seed, stream]))


def normalize_patches(x):
  """Per-patch brightness/contrast normalisation over the last axis (jnp or NumPy)."""
  xp = _xp(x)
  d = x.shape[-1]
  mean = x.mean(-1, keepdims=True)
  centred = x - mean
  var = (centred * centred).sum(-1, keepdims=True) / (d - 1)  # MATLAB's var: n - 1
  return centred / xp.sqrt(var + NORM_EPS)


def fit_zca(patches: np.ndarray, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
  """(mean [d], W [d, d]) of ZCA whitening, ``(x - mean) @ W``, fitted on ``patches [P, d]``.

  Mean and covariance (``n - 1``) are accumulated in float64 a chunk of rows at a time; ``W =
  V diag(1 / sqrt(lambda + 0.1)) V^T`` from the covariance's eigendecomposition.
  """
  n, d = patches.shape
  total, outer = np.zeros(d), np.zeros((d, d))
  for a in range(0, n, chunk):
    x = np.asarray(patches[a:a + chunk], np.float64)
    total += x.sum(0)
    outer += x.T @ x
  mean = total / n
  cov = (outer - n * np.outer(mean, mean)) / (n - 1)
  eigvals, eigvecs = np.linalg.eigh((cov + cov.T) / 2)
  w = (eigvecs * (1.0 / np.sqrt(np.maximum(eigvals, 0.0) + ZCA_EPS))) @ eigvecs.T
  return mean.astype(np.float32), w.astype(np.float32)


def image_patches(images, stride: int = 1):
  """Every 6x6 patch of ``images [B, H, W, C]`` (a jax array) at ``stride``: ``[B, h, w, 36 C]``
  with ``h = (H - 6) // stride + 1``; a patch is flattened in (row, column, channel) order, as
  ``image[r:r + 6, c:c + 6].reshape(-1)``. One gather (compiles ~10x faster than 36 slices)."""
  _, height, width, _ = images.shape
  rows = np.arange((height - RF) // stride + 1)[:, None] * stride + np.arange(RF)[None]
  cols = np.arange((width - RF) // stride + 1)[:, None] * stride + np.arange(RF)[None]
  patches = images[:, rows[:, None, :, None], cols[None, :, None, :], :]  # [B, h, w, 6, 6, C]
  return patches.reshape(*patches.shape[:3], -1)


def triangle(z):
  """The "triangle" encoding of distances ``z [..., K]``: ``max(0, mean_k(z) - z_k)``."""
  xp = _xp(z)
  return xp.maximum(z.mean(-1, keepdims=True) - z, 0.0)


def quadrant_pool(f):
  """Sum-pools ``f [B, h, w, K]`` over the 4 quadrants: ``[B, 4 K]``, quadrant-major (top-left,
  top-right, bottom-left, bottom-right); the top/left halves get ``ceil(h / 2)`` rows/columns.

  Written as zero padding to an even size and one reshaped sum (XLA fuses it into one pass,
  where 4 sliced sums cost about 1.3 times as much on CPU)."""
  xp = _xp(f)
  b, h, w, k = f.shape
  hh, hw = (h + 1) // 2, (w + 1) // 2
  f = xp.pad(f, ((0, 0), (0, 2 * hh - h), (0, 2 * hw - w), (0, 0)))
  return f.reshape(b, 2, hh, 2, hw, k).sum((2, 4)).reshape(b, 4 * k)


def _xp(x):
  """NumPy for a NumPy array, else jax.numpy (the functions above serve both)."""
  if isinstance(x, np.ndarray):
    return np
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  return jnp


@functools.lru_cache(maxsize=None)
def _encoder(stride: int):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  @jax.jit
  def encode(images, mean, w, centroids):
    """uint8 ``images [B, H, W, C]`` -> pooled triangle features ``[B, 4 K]`` (float32)."""
    x = normalize_patches(image_patches(images.astype(jnp.float32), stride))
    x = (x - mean) @ w
    xc = x @ centroids.T
    sq = (x * x).sum(-1, keepdims=True) - 2.0 * xc + (centroids * centroids).sum(-1)
    return quadrant_pool(triangle(jnp.sqrt(jnp.maximum(sq, 0.0))))

  return encode


@functools.lru_cache(maxsize=None)
def _kmeans_iteration(batch: int):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  @jax.jit
  def iteration(x, valid, centroids):
    """One Lloyd iteration over ``x [nb * batch, d]`` (rows with ``valid`` False are padding):
    (new centroids, mean squared distance to the nearest old centroid)."""
    k, d = centroids.shape
    half_c2 = 0.5 * (centroids * centroids).sum(-1)

    def step(carry, inputs):
      sums, counts, loss = carry
      xs, ms = inputs
      scores = xs @ centroids.T - half_c2  # argmax = nearest centroid
      labels = jnp.argmax(scores, -1)
      wt = ms.astype(jnp.float32)
      sums = sums + jax.ops.segment_sum(xs * wt[:, None], labels, k)
      counts = counts + jax.ops.segment_sum(wt, labels, k)
      sq = (xs * xs).sum(-1) - 2.0 * scores.max(-1)
      return (sums, counts, loss + (sq * wt).sum()), None

    init = (jnp.zeros((k, d), jnp.float32), jnp.zeros((k,), jnp.float32), jnp.float32(0))
    (sums, counts, loss), _ = jax.lax.scan(
        step, init, (x.reshape(-1, batch, d), valid.reshape(-1, batch)))
    new = jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1.0)[:, None], centroids)
    return new, loss / valid.sum()

  return iteration


@functools.lru_cache(maxsize=None)
def whiten_fn():
  import jax  # pylint: disable=g-import-not-at-top
  return jax.jit(lambda x, mean, w: (x - mean) @ w)


def kmeans(x: np.ndarray, k: int, iterations: int, seed: int, batch: int = 4096,
           log=None) -> np.ndarray:
  """K-means (Lloyd) on ``x [P, d]``: ``[k, d]`` float32 centroids. Starts from ``k`` distinct
  rows drawn from ``seed``; a centroid that gets no row keeps its place."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  n, d = x.shape
  centroids = jnp.asarray(x[np.sort(rng(seed, INIT).choice(n, k, replace=False))])
  batch = min(batch, n)
  pad = -n % batch
  xs = jnp.asarray(np.concatenate([x, np.zeros((pad, d), x.dtype)]) if pad else x)
  valid = jnp.asarray(np.arange(n + pad) < n)
  step = _kmeans_iteration(batch)
  for i in range(iterations):
    centroids, loss = step(xs, valid, centroids)
    if log is not None:
      log(f'k-means iteration {i + 1}/{iterations}: mean squared distance {float(loss):.3f}')
  return np.asarray(centroids)


def sample_patches(images, num: int, seed: int, chunk: int = 1024) -> np.ndarray:
  """``num`` random 6x6 patches of ``images [N, H, W, C]`` (uint8), ``[num, 36 C]`` float32 in
  0..255, flattened as :func:`image_patches` does. Image, row and column are drawn from ``seed``;
  the images are read ``chunk`` at a time (a memory map stays a memory map)."""
  n, height, width, channels = images.shape
  gen = rng(seed, PATCHES)
  which = gen.integers(0, n, num)
  rows = gen.integers(0, height - RF + 1, num)
  cols = gen.integers(0, width - RF + 1, num)
  out = np.empty((num, RF * RF * channels), np.float32)
  order = np.argsort(which, kind='stable')
  bounds = np.searchsorted(which[order], np.arange(0, n + chunk, chunk))
  offsets = np.arange(RF)
  for i, a in enumerate(range(0, n, chunk)):
    sel = order[bounds[i]:bounds[i + 1]]
    if not len(sel):
      continue
    block = np.asarray(images[a:a + chunk])
    r = rows[sel][:, None, None] + offsets[None, :, None]
    c = cols[sel][:, None, None] + offsets[None, None, :]
    out[sel] = block[(which[sel] - a)[:, None, None], r, c].reshape(len(sel), -1)
  return out


def encode_images(images, mean, w, centroids, stride: int, chunk: int, progress=None
                  ) -> np.ndarray:
  """The pooled triangle features ``[N, 4 K]`` (float32) of ``images [N, H, W, C]``, through one
  compiled function ``chunk`` images at a time (the last chunk padded)."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  encode = _encoder(stride)
  n = images.shape[0]
  mean, w, centroids = jnp.asarray(mean), jnp.asarray(w), jnp.asarray(centroids)
  out = np.empty((n, 4 * centroids.shape[0]), np.float32)
  pending = None  # one chunk in flight while the next is read
  for a in range(0, n, chunk):
    block = np.asarray(images[a:a + chunk])
    if len(block) < chunk:
      block = np.concatenate([block, np.zeros((chunk - len(block), *block.shape[1:]),
                                              block.dtype)])
    result = encode(block, mean, w, centroids)
    if pending is not None:
      _store(out, *pending, progress)
    pending = (a, result)
  if pending is not None:
    _store(out, *pending, progress)
  return out


def _store(out, a, result, progress):
  rows = min(len(result), out.shape[0] - a)
  out[a:a + rows] = np.asarray(result)[:rows]
  if progress is not None:
    progress.advance(rows)
