"""Image folders (``<root>/<split>/<class>/*.jpg``), decoded once into a cache of ``.npy`` files.

The cache entry is keyed by a fingerprint of the file list, sizes and modification times, so an
edited folder is decoded again; later runs memory-map it. Without a cache a lazy load decodes
only the rows read (:class:`FolderRows`).
"""

from __future__ import annotations

import concurrent.futures
import errno
import hashlib
import os
import shutil
import stat
import tempfile

import numpy as np

from jaxdisp.data.dataset import Dataset
from jaxdisp.errors import DataError

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png')
_CACHE_VERSION = 2  # 2: 16-bit images scaled to 8 bits, not clipped at 255
# Pillow's modes of one-channel images with more than 8 bits (a 16-bit grayscale PNG); 16-bit RGB
# PNGs Pillow reads as 8-bit RGB itself (keeping each value's high byte).
_WIDE_GRAY = ('I', 'I;16', 'I;16L', 'I;16B', 'I;16N')


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
      if im.mode in _WIDE_GRAY:  # convert('RGB') would clip every value above 255 to white
        return _gray16_to_rgb8(np.asarray(im))
      return np.asarray(im.convert('RGB'), dtype=np.uint8)
  except Exception as e:  # pylint: disable=broad-except
    raise DataError(f'cannot decode image {path}: {type(e).__name__}: {e}'.splitlines()[0]) from e


def _gray16_to_rgb8(values: np.ndarray) -> np.ndarray:
  """A 16-bit grayscale image (0..65535) as 8-bit RGB: value / 257 (65535 -> 255), rounded."""
  gray = np.clip(np.rint(values.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)
  return np.repeat(gray[..., None], 3, axis=-1)


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
