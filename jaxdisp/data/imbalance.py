"""Long-tailed subsets of a training split (``dataset.imbalance``; Cui et al., CVPR 2019)."""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxdisp.data.dataset import Dataset
from jaxdisp.errors import DataError


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
