"""Datasets: one entry point, :func:`load_dataset`, returning arrays on the host: uint8 NHWC images,
or float feature vectors ``[N, D]`` (embeddings).

Four sources (``config.dataset.source``):

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
* ``embeddings`` -- frozen features from any backbone: ``dataset.root`` names one ``.npz`` file or
  a folder of memory-mapped ``.npy`` files holding ``x_train [N, D]``, ``y_train``, ``x_test``,
  ``y_test`` and optionally ``class_names`` and ``files`` (:func:`from_embeddings`; the files name
  the source of each row, so queries name the images the vectors came from).

Sample ids are positions in ``train_images``; ``train_ids`` names each one (relative file path
for folders) so acquired labels can be traced back to files.

``dataset.imbalance`` > 1 then keeps a long-tailed subset of the training split
(:func:`long_tailed`); the test split stays as given.

One module per role: ``dataset`` (the :class:`Dataset` record and its checks),
``synthetic_images``, ``folder`` (image folders and their decoded cache), ``tfds``,
``embeddings`` (feature vectors and their checks) and
``imbalance`` (long-tailed subsets). Every public name is imported here: ``data.X``.
"""

from __future__ import annotations

from jaxdisp.data.dataset import Dataset, check_dataset, is_vector_shape
from jaxdisp.data.embeddings import from_embeddings
from jaxdisp.data.folder import IMAGE_SUFFIXES, FolderRows, cache_root, image_folder
from jaxdisp.data.imbalance import RowSubset, long_tailed, long_tailed_counts
from jaxdisp.data.synthetic_images import synthetic
from jaxdisp.data.tfds import from_tfds
from jaxdisp.errors import DataError

__all__ = ['Dataset', 'FolderRows', 'IMAGE_SUFFIXES', 'RowSubset', 'cache_root', 'check_dataset',
           'from_embeddings', 'from_tfds', 'image_folder', 'is_vector_shape', 'load_dataset',
           'long_tailed', 'long_tailed_counts', 'synthetic']


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
  elif source == 'embeddings':
    ds = from_embeddings(dataset_cfg.root, name=dataset_cfg.name)
  else:
    raise DataError(f'unknown dataset.source={source!r}: use synthetic, folder, tfds or '
                    'embeddings')
  check_dataset(ds)
  imbalance = float(dataset_cfg.get('imbalance', 1.0))
  if imbalance != 1.0:
    ds = long_tailed(ds, imbalance, dataset_cfg.data_seed)
    check_dataset(ds)
  return ds
