"""The dataset record every source returns, and the checks a dataset must pass.

Inputs are uint8 images ``[N, H, W, C]`` (the image sources) or float16/float32 feature vectors
``[N, D]`` (``dataset.source=embeddings``); ``image_shape`` is then ``(H, W, C)`` or ``(D,)``, and
everything downstream tells them apart by its length (:func:`is_vector_shape`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxdisp.errors import DataError


VECTOR_DTYPES = (np.dtype(np.float16), np.dtype(np.float32))


def is_vector_shape(shape) -> bool:
  """Whether a sample of ``shape`` (a dataset's ``image_shape``) is a feature vector ``(D,)``."""
  return len(tuple(shape)) == 1


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A labelled classification dataset on the host: images, or feature vectors (embeddings)."""
  name: str
  # uint8 [N, H, W, C] images or float16/float32 [N, D] vectors: an array, a memory map,
  # FolderRows or RowSubset
  train_images: np.ndarray
  train_labels: np.ndarray  # int32 [N]
  test_images: np.ndarray  # as train_images: [M, H, W, C] or [M, D], the same dtype
  test_labels: np.ndarray  # int32 [M]
  class_names: tuple
  train_ids: tuple  # str per training sample (file path, or a synthetic name)

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  @property
  def image_shape(self) -> tuple:
    """One sample's shape: ``(H, W, C)`` for images, ``(D,)`` for feature vectors."""
    return tuple(self.train_images.shape[1:])

  @property
  def is_vectors(self) -> bool:
    return is_vector_shape(self.image_shape)

  @property
  def num_train(self) -> int:
    return int(self.train_images.shape[0])

  @property
  def num_test(self) -> int:
    return int(self.test_images.shape[0])


def check_dataset(ds: Dataset) -> None:
  """Rejects datasets the trainer cannot use, naming what is wrong."""
  for split, images, labels in (('train', ds.train_images, ds.train_labels),
                                ('test', ds.test_images, ds.test_labels)):
    if not ((images.ndim == 4 and images.dtype == np.uint8)
            or (images.ndim == 2 and images.dtype in VECTOR_DTYPES)):
      raise DataError(f'{ds.name}/{split}: inputs must be uint8 images [N, H, W, C] or float16/'
                      f'float32 vectors [N, D], got {images.dtype} {images.shape}')
    if labels.shape != (images.shape[0],):
      raise DataError(f'{ds.name}/{split}: {labels.shape[0]} labels for {images.shape[0]} images')
    if images.shape[0] == 0:
      raise DataError(f'{ds.name}/{split}: no images')
    if labels.min() < 0 or labels.max() >= ds.num_classes:
      raise DataError(f'{ds.name}/{split}: labels outside [0, {ds.num_classes})')
  if ds.train_images.dtype != ds.test_images.dtype:
    raise DataError(f'{ds.name}: train inputs are {ds.train_images.dtype} but test inputs are '
                    f'{ds.test_images.dtype}')
  if ds.train_images.shape[1:] != ds.test_images.shape[1:]:
    raise DataError(f'{ds.name}: train images {ds.train_images.shape[1:]} and test images '
                    f'{ds.test_images.shape[1:]} differ in shape')
  if len(ds.train_ids) != ds.num_train:
    raise DataError(f'{ds.name}: {len(ds.train_ids)} ids for {ds.num_train} training images')
