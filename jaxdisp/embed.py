r"""``python -m jaxdisp.embed``: an image folder as an embeddings ``.npz``; no weights downloaded.

  python -m jaxdisp.embed --root ../shared/datasets/cifar10-jpg --out /tmp/cifar10_kmeans.npz
  python -m jaxdisp.embed --root FOLDER --out small.npz --centroids 64 --limit_train 2000

The features are the single-layer K-means features of Coates, Lee & Ng, "An Analysis of
Single-Layer Networks in Unsupervised Feature Learning" (AISTATS 2011):

1. ``--patches`` random 6x6 RGB patches of the training images (image, row, column drawn from
   ``--seed``), each normalised for brightness and contrast (its mean subtracted, divided by
   ``sqrt(var + 10)`` in 0..255 units) and ZCA-whitened (``epsilon = 0.1``, as in the paper's code);
2. K-means with ``--centroids`` K centroids on the whitened patches (``--iterations`` Lloyd
   iterations from K distinct patches drawn from the seed; an empty cluster keeps its centroid);
3. every 6x6 patch of every image at ``--stride`` (27x27 positions of a 32x32 image at stride 1),
   normalised and whitened the same way, encoded by the "triangle" activation
   ``f_k = max(0, mean_j(z_j) - z_k)`` with ``z_k`` the distance to centroid k, and sum-pooled over
   the 4 quadrants of the image: ``4 K`` features per image (quadrant-major: top-left, top-right,
   bottom-left, bottom-right, each K; an odd number of positions gives the top/left quadrants
   the extra row/column, as MATLAB's ``round`` in the paper's code);
4. standardised with the training rows' mean and standard deviation (so ``float16`` keeps about
   three significant digits of every feature's variation), optionally projected on the first
   ``--pca_dim`` principal components of the training rows, and written as ``--dtype``.

The output holds ``x_train [N, D]``, ``y_train [N]`` (int32), ``x_test [M, D]``, ``y_test [M]``,
``class_names`` (str), ``files`` (str: each training row's path relative to ``--root``, the ids of
``dataset.source=folder``) and ``embed_config`` (a JSON string: the settings and the sizes). The
images are read as ``dataset.source=folder`` reads them (decoded once into its cache,
:mod:`jaxdisp.data.folder`); ``--limit_train``/``--limit_test`` keep a random subset (drawn from
the seed, kept in folder order) for a quick run. The same command and seed on one machine write
the same bytes. Images go through one compiled function ``--chunk`` images at a time, so memory
stays bounded by the output; a progress line (images done, rate, ETA) goes to stderr at most
every 5 seconds. A bad input prints one ``error: ...`` line and exits with status 2; the output
is written atomically (a temporary file in the same folder, renamed when complete).

``--from_npz FILE --pca_dim D`` instead reduces an existing embeddings file (this command's, or
any backbone's in the same format): standardised, projected on D principal axes of its training
rows, every other array copied.
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
import tempfile
import time
import zipfile

import numpy as np

from jaxdisp import cli, files
from jaxdisp.errors import ConfigError, JaxdispError

RF = 6  # receptive field: 6x6 patches
NORM_EPS = 10.0  # brightness/contrast normalisation: (x - mean) / sqrt(var + 10), 0..255 units
ZCA_EPS = 0.1  # ZCA whitening: V diag(1 / sqrt(eig + 0.1)) V^T
PROGRESS_SECONDS = 5.0
DTYPES = ('float16', 'float32')
# Independent random streams of one --seed.
_SUBSET_TRAIN, _SUBSET_TEST, _PATCHES, _INIT = range(4)


def _rng(seed: int, stream: int) -> np.random.Generator:
  return np.random.default_rng(np.random.SeedSequence([seed, stream]))


# ------------------------------------------------------------------------------------------------
# The method: patches, normalisation, whitening, K-means, the encoding and the pooling.


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
def _whiten_fn():
  import jax  # pylint: disable=g-import-not-at-top
  return jax.jit(lambda x, mean, w: (x - mean) @ w)


def kmeans(x: np.ndarray, k: int, iterations: int, seed: int, batch: int = 4096,
           log=None) -> np.ndarray:
  """K-means (Lloyd) on ``x [P, d]``: ``[k, d]`` float32 centroids. Starts from ``k`` distinct
  rows drawn from ``seed``; a centroid that gets no row keeps its place."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  n, d = x.shape
  centroids = jnp.asarray(x[np.sort(_rng(seed, _INIT).choice(n, k, replace=False))])
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
  rng = _rng(seed, _PATCHES)
  which = rng.integers(0, n, num)
  rows = rng.integers(0, height - RF + 1, num)
  cols = rng.integers(0, width - RF + 1, num)
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


# ------------------------------------------------------------------------------------------------
# Standardisation and PCA of the features.


def standardize_stats(x: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
  """Per-column (mean, std) of ``x`` in float64, a chunk of rows at a time; a constant column
  gets std 1 (it stays 0 after centring)."""
  n = x.shape[0]
  total, squares = np.zeros(x.shape[1]), np.zeros(x.shape[1])
  for a in range(0, n, chunk):
    block = np.asarray(x[a:a + chunk], np.float64)
    total += block.sum(0)
    squares += (block * block).sum(0)
  mean = total / n
  std = np.sqrt(np.maximum(squares / n - mean * mean, 0.0))
  return mean, np.where(std > 1e-6 * max(float(std.max()), 1e-30), std, 1.0)


def fit_pca(x: np.ndarray, dim: int, chunk: int = 4096) -> np.ndarray:
  """The first ``dim`` principal axes ``[D, dim]`` of the rows ``x [N, D]``, which must be centred
  (standardised): ``x^T x / (N - 1)`` accumulated in float32 a chunk of rows at a time and
  eigendecomposed in float64. Each axis' sign is fixed (its largest-magnitude entry positive),
  so that the projection is deterministic."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  gram = jax.jit(lambda acc, b: acc + b.T @ b)
  cov = jnp.zeros((x.shape[1],) * 2, jnp.float32)
  for a in range(0, x.shape[0], chunk):
    cov = gram(cov, jnp.asarray(x[a:a + chunk], jnp.float32))
  cov = np.asarray(cov, np.float64) / max(x.shape[0] - 1, 1)
  eigvals, eigvecs = np.linalg.eigh((cov + cov.T) / 2)
  axes = eigvecs[:, np.argsort(eigvals)[::-1][:dim]]
  signs = np.sign(axes[np.argmax(np.abs(axes), 0), np.arange(dim)])
  return (axes * np.where(signs == 0, 1.0, signs)).astype(np.float32)


def finish(x_train: np.ndarray, x_test: np.ndarray, pca_dim: int, dtype: str):
  """(x_train, x_test) standardised with the training rows' statistics, projected on their
  first ``pca_dim`` principal axes when ``pca_dim`` > 0, as ``dtype``."""
  mu, sd = standardize_stats(x_train)
  axes = None
  if pca_dim:
    x_train = _transform(x_train, mu, sd, None, np.float32)
    x_test = _transform(x_test, mu, sd, None, np.float32)
    axes = fit_pca(x_train, pca_dim)
    mu, sd = np.zeros(x_train.shape[1]), np.ones(x_train.shape[1])
  return (_transform(x_train, mu, sd, axes, dtype), _transform(x_test, mu, sd, axes, dtype))


def _transform(x: np.ndarray, mean, std, axes, dtype, chunk: int = 4096) -> np.ndarray:
  """``((x - mean) / std) [@ axes]`` as a new ``dtype`` array, computed a chunk of rows at a
  time (no float32 copy of the whole ``x``)."""
  dim = x.shape[1] if axes is None else axes.shape[1]
  out = np.empty((x.shape[0], dim), dtype)
  mean, scale = mean.astype(np.float32), (1.0 / std).astype(np.float32)
  for a in range(0, x.shape[0], chunk):
    block = (x[a:a + chunk] - mean) * scale
    out[a:a + chunk] = block if axes is None else block @ axes
  return out


# ------------------------------------------------------------------------------------------------
# The command.


class Progress:
  """``embed: <what> <done>/<total> images  <rate> img/s  ETA <t>`` on stderr, at most every
  ``interval`` seconds (and when done)."""

  def __init__(self, total: int, what: str, interval: float = PROGRESS_SECONDS):
    self.total, self.what, self.interval = total, what, interval
    self.done = 0
    self.start = self._last = time.monotonic()

  def advance(self, rows: int) -> None:
    self.done += rows
    now = time.monotonic()
    if now - self._last >= self.interval or self.done >= self.total:
      self._last = now
      rate = self.done / max(now - self.start, 1e-9)
      eta = (self.total - self.done) / max(rate, 1e-9)
      _log(f'{self.what} {self.done:,}/{self.total:,} images  {rate:.0f} img/s  '
           f'ETA {_fmt_seconds(eta)}')


def _fmt_seconds(s: float) -> str:
  if not math.isfinite(s):
    return '?'
  s = int(round(s))
  return f'{s // 3600}h{s % 3600 // 60:02d}m' if s >= 3600 else f'{s // 60}m{s % 60:02d}s'


def keep_freed_memory() -> bool:
  """Asks glibc's malloc to serve blocks up to 256 MiB from its heap and to keep up to 512 MiB
  of freed memory there (``mallopt``), instead of a fresh ``mmap`` per block and returning it on
  ``free``: each compiled call allocates its temporaries (the ``[chunk, patches, K]`` distances,
  37 MiB at K=1600 and 8 images) anew, and with glibc's defaults (at most 32 MiB from the heap)
  the page faults of those fresh pages took 45% of the CPU time of the CIFAR-10 run. False where
  there is no glibc (nothing changes)."""
  try:
    import ctypes  # pylint: disable=g-import-not-at-top
    mallopt = ctypes.CDLL(None).mallopt
  except (OSError, AttributeError):
    return False
  m_trim_threshold, m_mmap_threshold = -1, -3
  return bool(mallopt(m_mmap_threshold, 256 << 20)) and bool(mallopt(m_trim_threshold, 512 << 20))


def _log(message: str) -> None:
  print(f'embed: {message}', file=sys.stderr, flush=True)


def parse_args(argv=None):
  p = cli.ArgumentParser(prog='python -m jaxdisp.embed', description=__doc__.splitlines()[0])
  p.add_argument('--root', default='', help='image folder: <root>/<split>/<class>/*.jpg')
  p.add_argument('--from_npz', default='',
                 help='instead of --root: an embeddings .npz (this command\'s or any other) to '
                      'standardise and reduce to --pca_dim dimensions')
  p.add_argument('--out', required=True, help='the .npz file to write')
  p.add_argument('--train_split', default='train')
  p.add_argument('--test_split', default='test')
  p.add_argument('--centroids', type=int, default=1600, help='K (features: 4 K before PCA)')
  p.add_argument('--patches', type=int, default=400_000, help='random patches for ZCA and K-means')
  p.add_argument('--iterations', type=int, default=10, help='K-means (Lloyd) iterations')
  p.add_argument('--stride', type=int, default=1, help='step between encoded patches')
  p.add_argument('--pca_dim', type=int, default=0,
                 help='project on this many principal components (0: keep all 4 K)')
  p.add_argument('--dtype', choices=DTYPES, default='float16')
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--chunk', type=int, default=8, help='images per compiled call')
  p.add_argument('--limit_train', type=int, default=0, help='a random subset of this size (0: all)')
  p.add_argument('--limit_test', type=int, default=0, help='a random subset of this size (0: all)')
  p.add_argument('--cache_dir', default='',
                 help="decoded-image cache (dataset.cache_dir; '' = $JAXDISP_CACHE_DIR or "
                      '~/.cache/jaxdisp)')
  return p.parse_args(argv)


def check_args(args) -> None:
  """Every mistake in the flags that needs no image: one ConfigError line."""
  if bool(args.root) == bool(args.from_npz):
    raise ConfigError('name the images with --root FOLDER, or an embeddings file to reduce '
                      'with --from_npz FILE --pca_dim D (one of the two)')
  if args.from_npz and args.pca_dim < 1:
    raise ConfigError('--from_npz needs --pca_dim D (at least 1): the dimension to reduce to')
  for name, low in (('centroids', 1), ('patches', 1), ('iterations', 1), ('stride', 1),
                    ('chunk', 1), ('pca_dim', 0), ('limit_train', 0), ('limit_test', 0)):
    if getattr(args, name) < low:
      raise ConfigError(f'--{name}={getattr(args, name)}: must be at least {low}')
  if args.patches < args.centroids:
    raise ConfigError(f'--patches={args.patches} is fewer than --centroids={args.centroids}: '
                      'K-means starts from K distinct patches')
  if args.pca_dim > 4 * args.centroids:
    raise ConfigError(f'--pca_dim={args.pca_dim} is more than the 4 x {args.centroids} = '
                      f'{4 * args.centroids} features')
  check_output(args.out)


def check_output(out: str) -> None:
  """Refuses an ``--out`` that cannot be written before any work: a folder, not ``.npz``, a
  folder that cannot be created or written to."""
  cli.check_utf8_path(out, '--out')
  if not out.endswith('.npz'):
    raise ConfigError(f'--out {out}: name a .npz file')
  if os.path.isdir(out):
    raise ConfigError(f'--out {out} is a folder: name the .npz file to write')
  folder = os.path.dirname(os.path.abspath(out))
  existing = folder
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise ConfigError(f'cannot write --out {out}: {existing} is a file, not a folder')
  try:
    os.makedirs(folder, exist_ok=True)
    fd, probe = tempfile.mkstemp(dir=folder, prefix='.' + os.path.basename(out) + '.',
                                 suffix=files.TMP_SUFFIX)
    os.close(fd)
    os.unlink(probe)
  except OSError as e:
    raise ConfigError(f'cannot write --out {out}: {e.strerror or e}') from None


def _subset(n: int, limit: int, seed: int, stream: int) -> np.ndarray | None:
  if not limit or limit >= n:
    return None
  return np.sort(_rng(seed, stream).choice(n, limit, replace=False))


def load_images(args):
  """(dataset, train images, train labels, train ids, test images, test labels), with the
  ``--limit_*`` subsets taken; only the rows kept are decoded when the folder is not cached."""
  from jaxdisp.data.folder import image_folder  # pylint: disable=g-import-not-at-top
  limited = bool(args.limit_train or args.limit_test)
  ds = image_folder(args.root, args.train_split, args.test_split, cache_dir=args.cache_dir,
                    lazy=limited)
  train_rows = _subset(ds.num_train, args.limit_train, args.seed, _SUBSET_TRAIN)
  test_rows = _subset(ds.num_test, args.limit_test, args.seed, _SUBSET_TEST)
  train, test = ds.train_images, ds.test_images
  train_labels, test_labels, ids = ds.train_labels, ds.test_labels, np.array(ds.train_ids)
  if train_rows is not None:
    train, train_labels, ids = train[train_rows], train_labels[train_rows], ids[train_rows]
  elif limited:  # a lazy FolderRows: decode it all now
    train = np.asarray(train)
  if test_rows is not None:
    test, test_labels = test[test_rows], test_labels[test_rows]
  return ds, train, train_labels, ids, test, test_labels


def reduce_npz(args) -> dict:
  """``--from_npz``: the file's features standardised and projected on ``--pca_dim`` principal
  axes of its training rows; every other array is copied. Returns the new ``embed_config``."""
  t0 = time.perf_counter()
  try:
    with np.load(args.from_npz, allow_pickle=False) as z:
      arrays = {k: z[k] for k in z.files}
  except (OSError, ValueError, EOFError) as e:
    raise ConfigError(f'cannot read --from_npz {args.from_npz}: '
                      f'{(getattr(e, "strerror", None) or str(e) or type(e).__name__)}'
                      .splitlines()[0]) from None
  for key in ('x_train', 'x_test'):
    if key not in arrays:
      raise ConfigError(f'--from_npz {args.from_npz} has no {key} array')
    if arrays[key].ndim != 2 or arrays[key].dtype.kind != 'f':
      raise ConfigError(f'--from_npz {args.from_npz}: {key} must be a float [rows, D] array, '
                        f'got {arrays[key].dtype} {arrays[key].shape}')
  n, d = arrays['x_train'].shape
  if arrays['x_test'].shape[1] != d:
    raise ConfigError(f'--from_npz {args.from_npz}: x_train has {d} columns, x_test '
                      f'{arrays["x_test"].shape[1]}')
  if args.pca_dim > min(n, d):
    raise ConfigError(f'--pca_dim={args.pca_dim} is more than the {min(n, d)} that the '
                      f'{n} x {d} x_train allows')
  if not all(np.isfinite(arrays[k]).all() for k in ('x_train', 'x_test')):
    raise ConfigError(f'--from_npz {args.from_npz}: the features hold NaN or inf')
  arrays['x_train'], arrays['x_test'] = finish(arrays['x_train'], arrays['x_test'],
                                               args.pca_dim, args.dtype)
  try:
    record = json.loads(str(arrays['embed_config'])) if 'embed_config' in arrays else {}
  except ValueError:
    record = {}
  record.update({'reduced_from': os.path.abspath(args.from_npz), 'from_dim': int(d),
                 'pca_dim': args.pca_dim, 'dtype': args.dtype, 'dim': args.pca_dim,
                 'num_train': int(n), 'num_test': int(arrays['x_test'].shape[0]),
                 'standardized': True})
  arrays['embed_config'] = np.array(json.dumps(record))
  write_npz(args.out, **arrays)
  return {**record, 'seconds': {'total_s': round(time.perf_counter() - t0, 2)}}


def embed(args) -> dict:
  """Runs the whole command; returns the ``embed_config`` record that it writes."""
  check_args(args)
  if args.from_npz:
    return reduce_npz(args)
  times = {}
  t0 = time.perf_counter()
  ds, train, y_train, ids, test, y_test = load_images(args)
  height, width, channels = train.shape[1:]
  if height < RF or width < RF:
    raise ConfigError(f'{args.root}: images are {width}x{height}, smaller than the {RF}x{RF} '
                      'patches')
  if args.pca_dim > train.shape[0]:
    raise ConfigError(f'--pca_dim={args.pca_dim} is more than the {train.shape[0]} training '
                      'images')
  times['read_s'] = time.perf_counter() - t0
  n, m = train.shape[0], test.shape[0]
  h = (height - RF) // args.stride + 1
  w = (width - RF) // args.stride + 1
  _log(f'{n:,} train + {m:,} test images, {width}x{height}x{channels}, {ds.num_classes} classes '
       f'({times["read_s"]:.1f} s to read); K={args.centroids}, {h}x{w} patches per image at '
       f'stride {args.stride}')

  t = time.perf_counter()
  patches = normalize_patches(sample_patches(train, args.patches, args.seed))
  mean, zca = fit_zca(patches)
  whitened = np.asarray(_whiten_fn()(patches, mean, zca))
  del patches
  times['patches_zca_s'] = time.perf_counter() - t
  _log(f'{args.patches:,} patches sampled, normalised and whitened '
       f'({times["patches_zca_s"]:.1f} s)')

  t = time.perf_counter()
  centroids = kmeans(whitened, args.centroids, args.iterations, args.seed, log=_log)
  del whitened
  times['kmeans_s'] = time.perf_counter() - t

  t = time.perf_counter()
  progress = Progress(n + m, 'features')
  x_train = encode_images(train, mean, zca, centroids, args.stride, args.chunk, progress)
  x_test = encode_images(test, mean, zca, centroids, args.stride, args.chunk, progress)
  times['features_s'] = time.perf_counter() - t

  t = time.perf_counter()
  x_train, x_test = finish(x_train, x_test, args.pca_dim, args.dtype)
  times['standardize_pca_s'] = time.perf_counter() - t

  record = {
      'method': 'Coates, Lee & Ng (AISTATS 2011) single-layer K-means, triangle, 4 quadrants',
      'root': os.path.abspath(args.root), 'train_split': args.train_split,
      'test_split': args.test_split, 'centroids': args.centroids, 'patches': args.patches,
      'iterations': args.iterations, 'stride': args.stride, 'receptive_field': RF,
      'pca_dim': args.pca_dim, 'dtype': args.dtype, 'seed': args.seed,
      'limit_train': args.limit_train, 'limit_test': args.limit_test,
      'num_train': n, 'num_test': m, 'dim': int(x_train.shape[1]),
      'image_shape': [int(height), int(width), int(channels)], 'standardized': True,
  }
  t = time.perf_counter()
  write_npz(args.out, x_train=x_train, y_train=np.asarray(y_train, np.int32), x_test=x_test,
            y_test=np.asarray(y_test, np.int32), class_names=np.array(ds.class_names, str),
            files=np.array(ids, str), embed_config=np.array(json.dumps(record)))
  times['write_s'] = time.perf_counter() - t
  times['total_s'] = time.perf_counter() - t0
  return {**record, 'seconds': {k: round(v, 2) for k, v in times.items()}}


def write_npz(path: str, **arrays) -> None:
  """An uncompressed ``.npz`` of ``arrays`` (what ``np.savez`` writes, with every member's zip
  time stamp fixed, so the same arrays give the same bytes), written into a temporary file next
  to ``path``, ``fsync``-ed and renamed: a reader sees the old file or the whole new one, as with
  :func:`jaxdisp.files.atomic_write`, without a second copy of the arrays in memory."""
  folder = os.path.dirname(os.path.abspath(path))
  with files.refused_as_one_line(path):
    fd, tmp = tempfile.mkstemp(dir=folder, prefix='.' + os.path.basename(path) + '.',
                               suffix=files.TMP_SUFFIX)
    try:
      with os.fdopen(fd, 'wb') as f:
        with zipfile.ZipFile(f, 'w', zipfile.ZIP_STORED, allowZip64=True) as zf:
          for name, array in arrays.items():
            info = zipfile.ZipInfo(name + '.npy', date_time=(1980, 1, 1, 0, 0, 0))
            with zf.open(info, 'w', force_zip64=True) as member:
              np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())
      mask = os.umask(0o022)
      os.umask(mask)
      os.chmod(tmp, 0o666 & ~mask)
      os.replace(tmp, path)
    except BaseException:
      if os.path.exists(tmp):
        os.unlink(tmp)
      raise


def main(argv=None) -> int:
  args = parse_args(argv)
  keep_freed_memory()
  try:
    t0 = time.perf_counter()
    record = embed(args)
  except JaxdispError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print(f'stopped: interrupted; {args.out} was not written', file=sys.stderr)
    return 130
  size = os.path.getsize(args.out)
  phases = ', '.join(f'{k[:-2]} {v:.1f}' for k, v in record['seconds'].items()
                     if k != 'total_s')
  _log(f'wrote {args.out}: x_train {record["num_train"]:,} x {record["dim"]} and x_test '
       f'{record["num_test"]:,} x {record["dim"]} {record["dtype"]}, {size / 2**20:.1f} MiB, in '
       f'{time.perf_counter() - t0:.1f} s ({phases} s)')
  return 0


if __name__ == '__main__':
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  sys.exit(main())
