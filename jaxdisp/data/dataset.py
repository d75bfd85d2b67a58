"""The dataset record every source returns, and the checks a dataset must pass."""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxdisp.errors import DataError


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
