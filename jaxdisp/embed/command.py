"""The ``python -m jaxdisp.embed`` command: flags, the checks made before any work, the run (the
images, or ``--from_npz``'s file, to an ``.npz``) and its atomic writer (see :mod:`jaxdisp.embed`)."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
import zipfile

import numpy as np

from jaxdisp import cli, files
from jaxdisp.embed.coates import (RF, SUBSET_TEST, SUBSET_TRAIN, encode_images, fit_zca, kmeans,
                                  normalize_patches, rng, sample_patches, whiten_fn)
from jaxdisp.embed.pca import finish
from jaxdisp.errors import ConfigError, JaxdispError

PROGRESS_SECONDS = 5.0
DTYPES = ('float16', 'float32')


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
  p = cli.ArgumentParser(
      prog='python -m jaxdisp.embed', formatter_class=argparse.ArgumentDefaultsHelpFormatter,
      description='An image folder as an embeddings .npz: the single-layer K-means features of '
                  'Coates, Lee & Ng (AISTATS 2011), no weights downloaded (docs/embed.md).')
  p.add_argument('--root', default='', help='image folder: <root>/<split>/<class>/*.jpg')
  p.add_argument('--from_npz', default='',
                 help='instead of --root: an embeddings .npz (this command\'s or any other) to '
                      'standardise and reduce to --pca_dim dimensions')
  p.add_argument('--out', required=True, help='the .npz file to write')
  p.add_argument('--train_split', default='train',
                 help='split folder of the training images')
  p.add_argument('--test_split', default='test', help='split folder of the test images')
  p.add_argument('--centroids', type=int, default=1600, help='K (features: 4 K before PCA)')
  p.add_argument('--patches', type=int, default=400_000, help='random patches for ZCA and K-means')
  p.add_argument('--iterations', type=int, default=10, help='K-means (Lloyd) iterations')
  p.add_argument('--stride', type=int, default=1, help='step between encoded patches')
  p.add_argument('--pca_dim', type=int, default=0,
                 help='project on this many principal components (0: keep all 4 K)')
  p.add_argument('--dtype', choices=DTYPES, default='float16', help='of the written features')
  p.add_argument('--seed', type=int, default=0,
                 help='subsets, patches and the K-means start')
  p.add_argument('--chunk', type=int, default=8,
                 help='images per compiled call (memory: chunk x 729 x K floats)')
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
  return np.sort(rng(seed, stream).choice(n, limit, replace=False))


def load_images(args):
  """(dataset, train images, train labels, train ids, test images, test labels), with the
  ``--limit_*`` subsets taken; only the rows kept are decoded when the folder is not cached."""
  from jaxdisp.data.folder import image_folder  # pylint: disable=g-import-not-at-top
  limited = bool(args.limit_train or args.limit_test)
  ds = image_folder(args.root, args.train_split, args.test_split, cache_dir=args.cache_dir,
                    lazy=limited)
  train_rows = _subset(ds.num_train, args.limit_train, args.seed, SUBSET_TRAIN)
  test_rows = _subset(ds.num_test, args.limit_test, args.seed, SUBSET_TEST)
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
  whitened = np.asarray(whiten_fn()(patches, mean, zca))
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
  phases = f' ({phases} s)' if phases else ''
  _log(f'wrote {args.out}: x_train {record["num_train"]:,} x {record["dim"]} and x_test '
       f'{record["num_test"]:,} x {record["dim"]} {record["dtype"]}, {size / 2**20:.1f} MiB, in '
       f'{time.perf_counter() - t0:.1f} s{phases}')
  return 0

