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

The package: :mod:`~jaxdisp.embed.coates` (the method: patches, whitening, K-means, the encoding
and the pooling), :mod:`~jaxdisp.embed.pca` (standardisation and PCA of the features) and
:mod:`~jaxdisp.embed.command` (the flags, the checks, the run and the atomic ``.npz`` writer).
"""

from jaxdisp.embed.coates import (NORM_EPS, RF, ZCA_EPS, encode_images, fit_zca, image_patches,
                                  kmeans, normalize_patches, quadrant_pool, sample_patches,
                                  triangle)
from jaxdisp.embed.command import check_args, embed, keep_freed_memory, main, write_npz
from jaxdisp.embed.pca import finish, fit_pca, standardize_stats

__all__ = ['NORM_EPS', 'RF', 'ZCA_EPS', 'check_args', 'embed', 'encode_images', 'finish',
           'fit_pca', 'fit_zca', 'image_patches', 'keep_freed_memory', 'kmeans', 'main',
           'normalize_patches', 'quadrant_pool', 'sample_patches', 'standardize_stats',
           'triangle', 'write_npz']
