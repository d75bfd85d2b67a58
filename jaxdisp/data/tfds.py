"""TensorFlow Datasets already prepared in ``dataset.data_dir``, read as numpy; never downloads."""

from __future__ import annotations

import importlib.util

import numpy as np

from jaxdisp.data.dataset import Dataset
from jaxdisp.errors import DataError


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
