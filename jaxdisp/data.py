"""Datasets: one entry point, :func:`load_dataset`, returning uint8 NHWC arrays on the host.

Three sources (``config.dataset.source``):

* ``synthetic`` -- procedurally generated, deterministic, class-structured images (oriented noisy
  gratings in random colours under random masks). Classes differ by orientation and frequency,
  never by colour, so a CNN needs several epochs and still makes mistakes. Used by the demo and
  the tests; needs no files.
* ``folder`` -- the standard image-folder layout ``<root>/<split>/<class>/*.{jpg,jpeg,png}``.
  Decoded once with Pillow and cached as ``.npy`` files outside the repository
  (``dataset.cache_dir``, else ``$JAXDISP_CACHE_DIR``, else ``~/.cache/jaxdisp``), keyed by a
  fingerprint of the file list, sizes and modification times, so an edited folder is decoded
  again; later runs memory-map the cache.
* ``tfds`` -- any TensorFlow Datasets image-classification dataset already prepared in
  ``dataset.data_dir`` (no downloads are attempted). Needs ``pip install 'jaxdisp[tfds]'``
  (tensorflow-datasets and TensorFlow, which tfds reads its files with); the other sources need
  neither.

Sample ids are positions in ``train_images``; ``train_ids`` names each one (relative file path
for folders) so acquired labels can be traced back to files.

``dataset.imbalance`` > 1 then keeps a long-tailed subset of the training split
(:func:`long_tailed`); the test split stays as given.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import errno
import hashlib
import importlib.util
import os
import shutil
import stat
import tempfile

import numpy as np

from jaxdisp.errors import DataError

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png')
_CACHE_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A labelled image-classification dataset on the host."""
  name: str
  train_images: np.ndarray  # uint8 [N, H, W, C]: an array, a memory map, FolderRows or RowSubset
  train_labels: np.ndarray  # int32 [N]
  test_images: np.ndarray  # uint8 [M, H, W, C]
  test_labels: np.ndarray  # int32 [M]
  class_names: tuple
  train_ids: tuple  # str per training sample (file path, or a synthetic name)

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  @property
  def image_shape(self) -> tuple:
    return tuple(self.train_images.shape[1:])

  @property
  def num_train(self) -> int:
    return int(self.train_images.shape[0])

  @property
  def num_test(self) -> int:
    return int(self.test_images.shape[0])


def load_dataset(dataset_cfg, lazy: bool = False) -> Dataset:
  """Loads ``dataset_cfg.source``; every failure is a one-line :class:`DataError`.

  ``lazy``: the caller reads only some training rows (``dataset.placement=sharded``: each process
  holds the rows of its own devices); a folder without a decoded cache then decodes just the rows
  asked for (:class:`FolderRows`), instead of the whole folder. A cached folder is memory-mapped
  either way, so only the rows read are loaded.
  """
  source = dataset_cfg.source
  if source == 'synthetic':
    ds = synthetic(dataset_cfg.num_train, dataset_cfg.num_test, dataset_cfg.num_classes,
                   dataset_cfg.image_size, dataset_cfg.data_seed, name=dataset_cfg.name)
  elif source == 'folder':
    ds = image_folder(dataset_cfg.root, dataset_cfg.train_split, dataset_cfg.test_split,
                      cache_dir=dataset_cfg.cache_dir, name=dataset_cfg.name, lazy=lazy)
  elif source == 'tfds':
    ds = from_tfds(dataset_cfg.name, dataset_cfg.data_dir, dataset_cfg.train_split,
                   dataset_cfg.test_split)
  else:
    raise DataError(f'unknown dataset.source={source!r}: use synthetic, folder or tfds')
  check_dataset(ds)
  imbalance = float(dataset_cfg.get('imbalance', 1.0))
  if imbalance != 1.0:
    ds = long_tailed(ds, imbalance, dataset_cfg.data_seed)
    check_dataset(ds)
  return ds


def check_dataset(ds: Dataset) -> None:
  """Rejects datasets the trainer cannot use, naming what is wrong."""
  for split, images, labels in (('train', ds.train_images, ds.train_labels),
                                ('test', ds.test_images, ds.test_labels)):
    if images.ndim != 4 or images.dtype != np.uint8:
      raise DataError(f'{ds.name}/{split}: images must be uint8 [N, H, W, C], got '
                      f'{images.dtype} {images.shape}')
    if labels.shape != (images.shape[0],):
      raise DataError(f'{ds.name}/{split}: {labels.shape[0]} labels for {images.shape[0]} images')
    if images.shape[0] == 0:
      raise DataError(f'{ds.name}/{split}: no images')
    if labels.min() < 0 or labels.max() >= ds.num_classes:
      raise DataError(f'{ds.name}/{split}: labels outside [0, {ds.num_classes})')
  if ds.train_images.shape[1:] != ds.test_images.shape[1:]:
    raise DataError(f'{ds.name}: train images {ds.train_images.shape[1:]} and test images '
                    f'{ds.test_images.shape[1:]} differ in shape')
  if len(ds.train_ids) != ds.num_train:
    raise DataError(f'{ds.name}: {len(ds.train_ids)} ids for {ds.num_train} training images')


# ---------------------------------------------------------------------------------------------
# long-tailed training split


def long_tailed_counts(class_sizes, ratio: float) -> list[int]:
  """Per-class sizes of the exponential long-tailed profile (Cui et al., CVPR 2019).

  ``n_i = floor(n_max * (1 / ratio) ** (i / (C - 1)))`` for class ``i`` in class-index order,
  ``n_max`` = the largest class of ``class_sizes``, capped at the class's own size (a class
  smaller than the profile keeps all its samples). Computed as the reference code does
  (richardaecn/class-balanced-loss, kaidic/LDAM-DRW): CIFAR-10 at ratio 100 gives 5000, 2997,
  1796, 1077, 645, 387, 232, 139, 83, 50.
  """
  sizes = [int(n) for n in class_sizes]
  if ratio < 1.0 or not np.isfinite(ratio):
    raise DataError(f'dataset.imbalance={ratio} must be a finite number >= 1')
  num_classes = len(sizes)
  if num_classes < 2:
    return sizes
  n_max, mu = max(sizes), 1.0 / ratio
  return [min(n, int(n_max * (mu ** (i / (num_classes - 1.0))))) for i, n in enumerate(sizes)]


def long_tailed(ds: Dataset, ratio: float, seed: int) -> Dataset:
  """The training split cut to the long-tailed profile of :func:`long_tailed_counts`.

  Class ``i`` keeps the first ``n_i`` of its samples in a random permutation of that class keyed
  by ``(seed, i)`` (``dataset.data_seed``), sorted back into dataset order: the same seed keeps the
  same samples, and a larger ratio keeps a subset of what a smaller one keeps. Sample ids become
  positions in the subset; ``train_ids`` still name the original files. The test split is
  unchanged. A plain in-memory array is indexed at once; a memory map or a lazily decoded folder
  stays lazy (:class:`RowSubset`: only the rows read are loaded). ``ratio == 1`` returns ``ds``.
  """
  if ratio == 1.0:
    return ds
  labels = np.asarray(ds.train_labels)
  sizes = np.bincount(labels, minlength=ds.num_classes)
  counts = long_tailed_counts(sizes, ratio)
  empty = [ds.class_names[i] for i, n in enumerate(counts) if n == 0]
  if empty:
    raise DataError(f'dataset.imbalance={ratio} leaves class {empty[0]!r} with no training '
                    f'samples (largest class: {int(sizes.max())}); lower the ratio')
  keep = []
  for i, n in enumerate(counts):
    members = np.flatnonzero(labels == i)
    rng = np.random.default_rng((int(seed), 0x4C54, i))  # 'LT'
    keep.append(members[rng.permutation(len(members))[:n]])
  rows = np.sort(np.concatenate(keep))
  images = ds.train_images
  if isinstance(images, np.ndarray) and not isinstance(images, np.memmap):
    images = images[rows]
  else:
    images = RowSubset(images, rows)
  return dataclasses.replace(ds, train_images=images, train_labels=labels[rows],
                             train_ids=tuple(ds.train_ids[i] for i in rows))


class RowSubset:
  """Rows ``rows`` of an array-like (a memory map, :class:`FolderRows`), read when indexed.

  ``subset[a:b]`` reads only rows ``rows[a:b]`` of the base, so a sharded placement still loads
  only its own devices' rows.
  """
  def __init__(self, base, rows):
    self._base, self._rows = base, np.asarray(rows, np.int64)
    self.dtype = np.dtype(base.dtype)
    self.shape = (len(self._rows), *base.shape[1:])
    self.ndim = len(self.shape)

  def __len__(self) -> int:
    return self.shape[0]

  def __getitem__(self, key) -> np.ndarray:
    key = key if isinstance(key, tuple) else (key,)
    picked = self._rows[key[0]]
    if np.ndim(picked) == 0:
      return np.asarray(self._base[int(picked)])[key[1:]]
    rows = np.asarray(self._base[picked]) if len(picked) else np.zeros(
        (0, *self.shape[1:]), self.dtype)
    return rows[(slice(None),) + key[1:]]

  def __array__(self, dtype=None, copy=None):
    del copy
    out = self[:]
    return out if dtype is None else out.astype(dtype)


# ---------------------------------------------------------------------------------------------
# synthetic


def _synthetic_split(rng: np.random.Generator, n: int, num_classes: int, size: int):
  """Oriented gratings; class = (orientation, frequency) cell, colours and masks are nuisance."""
  labels = rng.integers(0, num_classes, n).astype(np.int32)
  num_orient = (num_classes + 1) // 2
  orient = (labels % num_orient) * (np.pi / num_orient)
  orient = orient + rng.normal(0.0, 0.16 * np.pi / num_orient, n)  # neighbouring classes overlap
  freq = np.where(labels < num_orient, 2.5, 4.5) + rng.normal(0.0, 0.45, n)  # cycles per image
  phase = rng.uniform(0, 2 * np.pi, n)
  yy, xx = np.meshgrid(np.linspace(-0.5, 0.5, size), np.linspace(-0.5, 0.5, size), indexing='ij')
  proj = (np.cos(orient)[:, None, None] * xx + np.sin(orient)[:, None, None] * yy)
  wave = np.sin(2 * np.pi * freq[:, None, None] * proj + phase[:, None, None])  # [n, H, W]
  # A soft blob of random position and radius decides where the grating shows.
  cy, cx = rng.uniform(-0.25, 0.25, (2, n))
  radius = rng.uniform(0.2, 0.45, n)
  dist = np.sqrt((yy - cy[:, None, None]) ** 2 + (xx - cx[:, None, None]) ** 2)
  blob = 1.0 / (1.0 + np.exp((dist - radius[:, None, None]) * 25.0))
  contrast = rng.uniform(0.25, 0.6, n)[:, None, None]
  background = rng.uniform(0.15, 0.85, (n, 3))  # colour independent of the class
  tint = rng.uniform(-1.0, 1.0, (n, 3))
  tint /= np.linalg.norm(tint, axis=1, keepdims=True) + 1e-6
  pattern = (contrast * blob * wave)[..., None] * (0.5 + 0.5 * np.abs(tint))[:, None, None, :]
  images = background[:, None, None, :] + pattern
  images += rng.normal(0.0, 0.12, images.shape)
  return np.clip(images * 255.0 + 0.5, 0, 255).astype(np.uint8), labels


def synthetic(num_train: int = 5000, num_test: int = 1000, num_classes: int = 10,
              image_size: int = 32, data_seed: int = 0, name: str = 'synthetic') -> Dataset:
  """A deterministic function of its arguments (same arguments => same bytes)."""
  if num_train < 1 or num_test < 1:
    raise DataError(f'synthetic data needs num_train, num_test >= 1 (got {num_train}, {num_test})')
  if not 2 <= num_classes <= 64:
    raise DataError(f'synthetic data supports 2..64 classes (got dataset.num_classes={num_classes})')
  if not 8 <= image_size <= 256:
    raise DataError(f'synthetic data supports image sizes 8..256 (got dataset.image_size={image_size})')
  train_rng, test_rng = (np.random.default_rng(s) for s in
                         np.random.SeedSequence(data_seed).spawn(2))
  chunks = [_synthetic_split(train_rng, min(4096, num_train - i), num_classes, image_size)
            for i in range(0, num_train, 4096)]
  train_images = np.concatenate([c[0] for c in chunks])
  train_labels = np.concatenate([c[1] for c in chunks])
  test_images, test_labels = _synthetic_split(test_rng, num_test, num_classes, image_size)
  return Dataset(
      name=name or 'synthetic', train_images=train_images, train_labels=train_labels,
      test_images=test_images, test_labels=test_labels,
      class_names=tuple(f'class_{c}' for c in range(num_classes)),
      train_ids=tuple(f'train/{i}' for i in range(num_train)))


# ---------------------------------------------------------------------------------------------
# image folder


def _stat(path: str, want_dir: bool = False) -> os.stat_result:
  """``os.stat(path)``, or a one-line DataError for what a folder scan can meet: a dangling
  symlink, a symlink loop, an unreadable entry, a FIFO/socket/device named like an image."""
  try:
    st = os.stat(path)
  except OSError as e:
    what = ('a symlink loop' if e.errno == errno.ELOOP else
            'a dangling symlink' if os.path.islink(path) and e.errno == errno.ENOENT else '')
    raise DataError(f'cannot read {_shown(path)}: {e.strerror or e}'
                    + (f' (it is {what}: fix or remove it)' if what else '')) from None
  if not (stat.S_ISDIR(st.st_mode) if want_dir else stat.S_ISREG(st.st_mode)):
    raise DataError(f'{_shown(path)} is not a {"folder" if want_dir else "regular file"}: '
                    'remove it from the image folder')
  return st


def _shown(path: str) -> str:
  """A path for a message: as is, or escaped when it holds undecodable bytes or invisible
  characters."""
  return path if path.isprintable() else ascii(path)


def _listdir(path: str) -> list[str]:
  try:
    return os.listdir(path)
  except OSError as e:
    raise DataError(f'cannot list {_shown(path)}: {e.strerror or e}') from None


def _list_split(root: str, split: str):
  split_dir = os.path.join(root, split)
  if not os.path.isdir(split_dir):
    raise DataError(f'image folder {root!r} has no {split!r} split: expected '
                    f'{split_dir}/<class>/*.jpg')
  entries = sorted(d for d in _listdir(split_dir) if not d.startswith('.'))
  for d in entries:  # a class folder behind a broken symlink must not vanish silently
    if os.path.islink(os.path.join(split_dir, d)):
      _stat(os.path.join(split_dir, d), want_dir=os.path.isdir(os.path.join(split_dir, d)))
  classes = [d for d in entries if os.path.isdir(os.path.join(split_dir, d))]
  if not classes:
    raise DataError(f'{split_dir} has no class sub-folders: expected {split_dir}/<class>/*.jpg')
  files = []
  for c in classes:
    names = sorted(f for f in _listdir(os.path.join(split_dir, c))
                   if f.lower().endswith(IMAGE_SUFFIXES) and not f.startswith('.'))
    if not names:
      raise DataError(f'class folder {os.path.join(split_dir, c)} has no .jpg/.jpeg/.png images')
    files.extend((os.path.join(split, c, f), c) for f in names)
  return classes, files


def _fingerprint(root: str, files) -> str:
  h = hashlib.sha256(f'jaxdisp-folder-v{_CACHE_VERSION}'.encode())
  for rel, _ in files:
    st = _stat(os.path.join(root, rel))
    # surrogateescape: a file name that is not valid UTF-8 still has its bytes
    h.update(f'{rel}\0{st.st_size}\0{st.st_mtime_ns}\n'.encode('utf-8', 'surrogateescape'))
  return h.hexdigest()


def _decode(path: str) -> np.ndarray:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  try:
    with Image.open(path) as im:
      return np.asarray(im.convert('RGB'), dtype=np.uint8)
  except Exception as e:  # pylint: disable=broad-except
    raise DataError(f'cannot decode image {path}: {type(e).__name__}: {e}'.splitlines()[0]) from e


def _decode_all(root: str, files, like: tuple[str, tuple] | None = None) -> np.ndarray:
  """Decodes ``files`` into one uint8 array; every image must have the shape of ``like``
  (a reference path and its shape; default: the first of ``files``)."""
  paths = [os.path.join(root, rel) for rel, _ in files]
  with concurrent.futures.ThreadPoolExecutor(max(2, min(8, os.cpu_count() or 2))) as pool:
    arrays = list(pool.map(_decode, paths, chunksize=256))
  ref, shape = like or (paths[0], arrays[0].shape)
  for path, a in zip(paths, arrays):
    if a.shape != shape:
      raise DataError(f'image {path} is {a.shape[1]}x{a.shape[0]}, but {ref} is '
                      f'{shape[1]}x{shape[0]}: resize the folder to one size first')
  return np.stack(arrays)


class FolderRows:
  """The images of a folder split as a read-only array that decodes rows when they are read.

  ``rows[a:b]`` (or any index along the first axis) decodes only those files, so a process of a
  multi-host run that holds rows ``a:b`` of the training set never decodes the others. Shape
  ``[N, H, W, C]`` comes from the first file; a file of another size is an error when read.
  """
  dtype = np.dtype(np.uint8)
  ndim = 4

  def __init__(self, root: str, files):
    self._root, self._files = root, list(files)
    first = _decode(os.path.join(root, self._files[0][0]))
    self.shape = (len(self._files), *first.shape)

  def __len__(self) -> int:
    return self.shape[0]

  def __getitem__(self, key) -> np.ndarray:
    key = key if isinstance(key, tuple) else (key,)
    picked = np.arange(self.shape[0])[key[0]]
    rows = self._decode(np.atleast_1d(picked))
    if np.ndim(picked) == 0:
      rows = rows[0]
    return rows[(slice(None),) * np.ndim(picked) + key[1:]]

  def _decode(self, ids: np.ndarray) -> np.ndarray:
    if not len(ids):
      return np.zeros((0, *self.shape[1:]), np.uint8)
    first = os.path.join(self._root, self._files[0][0])
    return _decode_all(self._root, [self._files[i] for i in ids], like=(first, self.shape[1:]))

  def __array__(self, dtype=None, copy=None):
    del copy
    out = self[:]
    return out if dtype is None else out.astype(dtype)


def cache_root(cache_dir: str = '') -> str:
  return (cache_dir or os.environ.get('JAXDISP_CACHE_DIR')
          or os.path.join(os.path.expanduser('~'), '.cache', 'jaxdisp'))


def _read_cache(path: str, num_train: int, num_test: int):
  """(train, test) memory maps of a complete cache entry, or None."""
  try:
    arrays = tuple(np.load(os.path.join(path, f'{split}.npy'), mmap_mode='r')
                   for split in ('train', 'test'))
  except Exception:  # pylint: disable=broad-except  (missing or corrupt: decoded again)
    return None
  if arrays[0].shape[0] != num_train or arrays[1].shape[0] != num_test:
    return None
  return arrays


def _write_cache(path: str, train: np.ndarray, test: np.ndarray) -> None:
  """Writes the cache entry as a folder of two ``.npy`` files, renamed into place when complete."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = tempfile.mkdtemp(dir=os.path.dirname(path), prefix='.tmp-')
  try:
    for split, arr in (('train', train), ('test', test)):
      np.save(os.path.join(tmp, f'{split}.npy'), arr)
    os.replace(tmp, path)
  finally:
    if os.path.isdir(tmp):
      shutil.rmtree(tmp, ignore_errors=True)


def image_folder(root: str, train_split: str = 'train', test_split: str = 'test',
                 cache_dir: str = '', name: str = '', lazy: bool = False) -> Dataset:
  """Reads ``<root>/<split>/<class>/*.{jpg,jpeg,png}``; classes are sorted folder names.

  The decoded images are cached (``<cache>/folder-<name>-<fingerprint>/{train,test}.npy``) and
  memory-mapped from there. ``lazy`` and no cache yet: the training images are a
  :class:`FolderRows` that decodes only the rows read, and nothing is cached.
  """
  if not root or not os.path.isdir(root):
    raise DataError(f'dataset.root={root!r} is not a folder (expected <root>/{train_split}/'
                    '<class>/*.jpg)')
  root = os.path.abspath(root)
  classes, train_files = _list_split(root, train_split)
  test_classes, test_files = _list_split(root, test_split)
  unknown = sorted(set(test_classes) - set(classes))
  if unknown:
    raise DataError(f'{os.path.join(root, test_split)} has classes not in {train_split}: '
                    f'{", ".join(unknown[:5])}')
  name = name or os.path.basename(root.rstrip(os.sep))
  fp = _fingerprint(root, train_files + test_files)
  path = os.path.join(cache_root(cache_dir), f'folder-{name}-{fp[:20]}')
  index = {c: i for i, c in enumerate(classes)}
  train_labels = np.array([index[c] for _, c in train_files], np.int32)
  test_labels = np.array([index[c] for _, c in test_files], np.int32)
  arrays = _read_cache(path, len(train_files), len(test_files))
  if arrays is None and lazy:
    test_images = _decode_all(root, test_files)
    train_images = FolderRows(root, train_files)
    if train_images.shape[1:] != test_images.shape[1:]:
      raise DataError(f'{root}: {train_split} images are {train_images.shape[1:]} but '
                      f'{test_split} images are {test_images.shape[1:]}')
    arrays = train_images, test_images
  elif arrays is None:
    arrays = _decode_all(root, train_files), _decode_all(root, test_files)
    if arrays[0].shape[1:] != arrays[1].shape[1:]:
      raise DataError(f'{root}: {train_split} images are {arrays[0].shape[1:]} but {test_split} '
                      f'images are {arrays[1].shape[1:]}')
    try:
      _write_cache(path, *arrays)
    except OSError as e:  # a read-only cache only costs time
      import logging  # pylint: disable=g-import-not-at-top
      logging.warning('could not write the decoded-image cache %s: %s', path, e)
  return Dataset(name=name, train_images=arrays[0], train_labels=train_labels,
                 test_images=arrays[1], test_labels=test_labels, class_names=tuple(classes),
                 train_ids=tuple(rel for rel, _ in train_files))


# ---------------------------------------------------------------------------------------------
# TensorFlow Datasets


def from_tfds(name: str, data_dir: str = '', train_split: str = 'train',
              test_split: str = 'test') -> Dataset:
  """Loads an already-prepared tfds dataset as numpy; never downloads."""
  hint = (f'prepare it with `tfds build {name}` where there is internet and pass '
          '--config.dataset.data_dir, or use --config.dataset.source=folder '
          '--config.dataset.root=<dir with train/ and test/>')
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise DataError("dataset.source=tfds needs tensorflow-datasets: pip install 'jaxdisp[tfds]' "
                    '(or use --config.dataset.source=folder --config.dataset.root=<dir with '
                    'train/ and test/>)') from None
  try:
    builder = tfds.builder(name, data_dir=data_dir or None)
  except Exception as e:  # pylint: disable=broad-except
    raise DataError(f'unknown tfds dataset {name!r} ({type(e).__name__}); {hint}') from e
  if not builder.is_prepared():
    where = data_dir or getattr(builder, 'data_dir', '') or '~/tensorflow_datasets'
    raise DataError(f'tfds dataset {name!r} is not prepared in {where} and downloads are off; {hint}')
  if importlib.util.find_spec('tensorflow') is None:  # tfds reads prepared tfrecords with tf.data
    raise DataError(f"reading the prepared tfds dataset {name!r} needs TensorFlow: pip install "
                    "'jaxdisp[tfds]'")
  features = builder.info.features
  keys = getattr(builder.info, 'supervised_keys', None) or ('image', 'label')
  image_key, label_key = keys[0], keys[1]
  try:
    class_names = tuple(features[label_key].names)
  except Exception:  # pylint: disable=broad-except
    raise DataError(f'tfds dataset {name!r} has no class-label feature {label_key!r}') from None

  def split(s):
    try:
      arrays = tfds.as_numpy(builder.as_dataset(split=s, batch_size=-1))
    except Exception as e:  # pylint: disable=broad-except
      raise DataError(f'tfds dataset {name!r} has no readable split {s!r}: '
                      f'{type(e).__name__}'.splitlines()[0]) from e
    return np.asarray(arrays[image_key], np.uint8), np.asarray(arrays[label_key], np.int32)

  train_images, train_labels = split(train_split)
  test_images, test_labels = split(test_split)
  return Dataset(name=name, train_images=train_images, train_labels=train_labels,
                 test_images=test_images, test_labels=test_labels, class_names=class_names,
                 train_ids=tuple(f'{train_split}/{i}' for i in range(train_images.shape[0])))
