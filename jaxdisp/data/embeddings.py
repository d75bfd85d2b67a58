"""Frozen features (``dataset.source=embeddings``): vectors from any backbone, and their labels.

``dataset.root`` names either one ``.npz`` file or a folder of ``.npy`` files (one per array,
``<root>/x_train.npy`` etc., memory-mapped: only the rows read are loaded, so a large N stays
cheap). Either way it holds

* ``x_train`` ``[N, D]`` and ``x_test`` ``[M, D]``: float16 or float32, the same dtype;
* ``y_train`` ``[N]`` and ``y_test`` ``[M]``: integer class indices;
* optional ``class_names`` ``[C]`` (strings): the classes; without it, C = the largest label + 1
  and the classes are named ``'0'``, ``'1'``, ...;
* optional ``files`` ``[N]`` (strings): the source of each training row (e.g. the image's path),
  which becomes its ``train_id``, so ``selections.jsonl`` and the files oracle's queries name the
  source images; without it the rows are ``train/0``, ``train/1``, ...

Every check is a one-line :class:`~jaxdisp.errors.DataError` naming the file and the array:
a missing array, a wrong rank, a non-float or mixed float dtype, NaN or inf (scanned in chunks of
rows, so memory stays bounded), non-integer or out-of-range labels, train and test dimensions that
differ, ``files`` / ``class_names`` of the wrong length, an unreadable or corrupt file.
"""

from __future__ import annotations

import os
import zipfile
import zlib

import numpy as np

from jaxdisp.data.dataset import Dataset
from jaxdisp.errors import ConfigError, DataError

REQUIRED = ('x_train', 'y_train', 'x_test', 'y_test')
OPTIONAL = ('class_names', 'files')
FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32))
MAX_CLASSES = 32767  # the prediction history stores a class per epoch as int16
CHUNK_VALUES = 1 << 22  # values per block when scanning for NaN/inf (16 MB of float32)
_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, KeyError)


def check_config(cfg) -> None:
  """What ``dataset.source=embeddings`` needs of the rest of the config (a ConfigError each):
  a root, and no image augmentation (vectors are not augmented; nothing replaces it)."""
  def need(ok, msg):
    if not ok:
      raise ConfigError(msg)

  need(cfg.dataset.root, 'dataset.source=embeddings needs --config.dataset.root=<an .npz file '
       'or a folder of .npy files>')
  need(not cfg.train.augment, 'train.augment=True crops and flips images, and '
       'dataset.source=embeddings gives feature vectors, which are not augmented: set '
       '--config.train.augment=False')
  need(not cfg.dispersion.augmented_views, 'dispersion.augmented_views=True records predictions '
       'on cropped and flipped images; feature vectors (dataset.source=embeddings) have no '
       'augmented views: set --config.dispersion.augmented_views=False')


def from_embeddings(root: str, name: str = '') -> Dataset:
  """Reads and checks the embeddings at ``root`` (an ``.npz`` file or a folder of ``.npy``)."""
  arrays, where = _open(root)
  x_train, x_test = _vectors(arrays, 'x_train', where), _vectors(arrays, 'x_test', where)
  if x_train.dtype != x_test.dtype:
    raise DataError(f'{root}: x_train is {x_train.dtype} but x_test is {x_test.dtype}: save '
                    'both with one dtype (float16 or float32)')
  if x_train.shape[1] != x_test.shape[1]:
    raise DataError(f'{root}: x_train has {x_train.shape[1]} dimensions but x_test has '
                    f'{x_test.shape[1]}: both must come from the same backbone')
  y_train = _labels(arrays, 'y_train', x_train.shape[0], where)
  y_test = _labels(arrays, 'y_test', x_test.shape[0], where)
  class_names = _class_names(arrays, where, y_train, y_test)
  files = _strings(arrays, 'files', where)
  if files is None:
    train_ids = tuple(f'train/{i}' for i in range(x_train.shape[0]))
  elif len(files) != x_train.shape[0]:
    raise DataError(f'{where("files")}: files has {len(files)} names for the {x_train.shape[0]} '
                    'rows of x_train (one per training row)')
  else:
    train_ids = files
  for key, x in (('x_train', x_train), ('x_test', x_test)):
    check_finite(x, where(key), key)
  name = name or os.path.splitext(os.path.basename(os.path.normpath(root)))[0]
  return Dataset(name=name, train_images=x_train, train_labels=y_train, test_images=x_test,
                 test_labels=y_test, class_names=class_names, train_ids=train_ids)


def _open(root: str):
  """(name -> array for the arrays present, name -> where it is for messages)."""
  if not root:
    raise DataError('dataset.source=embeddings needs --config.dataset.root=<an .npz file or a '
                    'folder of .npy files>')
  if os.path.isdir(root):
    arrays = {}
    for key in REQUIRED + OPTIONAL:
      path = os.path.join(root, f'{key}.npy')
      if not os.path.exists(path):
        continue
      try:  # memory-mapped: nothing is read but the header until rows are used
        arrays[key] = np.load(path, mmap_mode='r', allow_pickle=False)
      except _READ_ERRORS as e:
        raise DataError(f'cannot read {path}: {_reason(e)}') from None
    _need_all(arrays, root, '.npy files in the folder')
    return arrays, lambda key: os.path.join(root, f'{key}.npy')
  if not os.path.isfile(root):
    raise DataError(f'dataset.root={root!r}: no such file or folder (expected an .npz file or a '
                    'folder of .npy files)')
  try:
    z = np.load(root, allow_pickle=False)
  except _READ_ERRORS as e:  # numpy tries pickle last: neither a zip archive nor an .npy
    reason = 'not an .npz or .npy file' if 'pickle' in str(e) else _reason(e)
    raise DataError(f'cannot read {root}: {reason} (expected an .npz archive written by '
                    'np.savez)') from None
  if not isinstance(z, np.lib.npyio.NpzFile):
    raise DataError(f'{root} holds one array, not an .npz archive of x_train, y_train, x_test, '
                    'y_test (np.savez): or give a folder of .npy files')
  with z:
    arrays = {}
    for key in [k for k in REQUIRED + OPTIONAL if k in z.files]:
      try:
        arrays[key] = z[key]
      except _READ_ERRORS as e:
        raise DataError(f'cannot read {root}:{key}: {_reason(e)}') from None
  _need_all(arrays, root, 'arrays in the .npz')
  return arrays, lambda key: f'{root}:{key}'


def _reason(e: Exception) -> str:
  text = ' '.join(str(e).split()) or type(e).__name__
  if 'Object arrays' in text or 'Python objects' in text:
    return 'it holds Python objects; save strings as a string array, e.g. np.array(names, str)'
  return f'{type(e).__name__}: {text}' if isinstance(e, (zipfile.BadZipFile, zlib.error)) else text


def _need_all(arrays: dict, root: str, what: str) -> None:
  missing = [k for k in REQUIRED if k not in arrays]
  if missing:
    raise DataError(f'{root}: no {", ".join(missing)} among the {what} (need x_train, y_train, '
                    'x_test, y_test; optional class_names, files)')


def _vectors(arrays: dict, key: str, where) -> np.ndarray:
  x = arrays[key]
  if x.ndim != 2:
    raise DataError(f'{where(key)}: {key} must be [N, D] (one feature vector per row), got '
                    f'shape {x.shape}')
  if x.dtype not in FLOAT_DTYPES:
    raise DataError(f'{where(key)}: {key} is {x.dtype}; embeddings must be float16 or float32 '
                    '(e.g. x.astype(np.float32))')
  if 0 in x.shape:
    raise DataError(f'{where(key)}: {key} is empty (shape {x.shape})')
  return x


def check_finite(x, where: str, key: str) -> None:
  """Raises naming the first row of ``x`` ``[N, D]`` with NaN or inf, reading blocks of rows."""
  step = max(1, CHUNK_VALUES // max(1, x.shape[1]))
  for start in range(0, x.shape[0], step):
    ok = np.isfinite(np.asarray(x[start:start + step])).all(axis=1)
    if not ok.all():
      row = start + int(np.argmin(ok))
      raise DataError(f'{where}: {key} row {row} holds NaN or inf (the first such row): '
                      'embeddings must be finite')


def _labels(arrays: dict, key: str, rows: int, where) -> np.ndarray:
  y = arrays[key]
  if y.ndim != 1:
    raise DataError(f'{where(key)}: {key} must be [N] (one class index per row), got shape '
                    f'{y.shape}')
  if not np.issubdtype(y.dtype, np.integer):
    raise DataError(f'{where(key)}: {key} is {y.dtype}; labels must be integer class indices '
                    '(e.g. y.astype(np.int32))')
  if y.shape[0] != rows:
    raise DataError(f'{where(key)}: {key} has {y.shape[0]} labels for the {rows} rows of '
                    f'x_{key[2:]}')
  y = np.asarray(y)
  low, high = int(y.min()), int(y.max())
  if low < 0 or high >= MAX_CLASSES:
    raise DataError(f'{where(key)}: {key} holds the label {low if low < 0 else high}; labels '
                    f'must be class indices in [0, {MAX_CLASSES})')
  return y.astype(np.int32)


def _class_names(arrays: dict, where, y_train: np.ndarray, y_test: np.ndarray) -> tuple:
  names = _strings(arrays, 'class_names', where)
  if names is None:
    return tuple(str(i) for i in range(int(max(y_train.max(), y_test.max())) + 1))
  for key, y in (('y_train', y_train), ('y_test', y_test)):
    if int(y.max()) >= len(names):
      raise DataError(f'{where(key)}: {key} holds the label {int(y.max())} but class_names names '
                      f'{len(names)} classes: labels must be in [0, {len(names)})')
  if len(set(names)) != len(names) or not all(names):
    bad = next(n for i, n in enumerate(names) if not n or n in names[:i])
    raise DataError(f'{where("class_names")}: class_names holds {bad!r} '
                    f'{"twice" if bad else "(an empty name)"}: one distinct name per class')
  return names


def _strings(arrays: dict, key: str, where) -> tuple | None:
  """The optional string array ``key`` as a tuple of str, or None when it is absent."""
  if key not in arrays:
    return None
  a = arrays[key]
  if a.ndim != 1 or a.dtype.kind not in 'US':
    raise DataError(f'{where(key)}: {key} must be a 1-D array of strings, got {a.dtype} of shape '
                    f'{a.shape}')
  try:
    return tuple(v.decode('utf-8') if isinstance(v, bytes) else str(v) for v in a.tolist())
  except UnicodeDecodeError as e:
    raise DataError(f'{where(key)}: {key} holds bytes that are not UTF-8 ({e.reason})') from None
