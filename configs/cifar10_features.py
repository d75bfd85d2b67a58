"""The paper's protocol on frozen CIFAR-10 features: a linear head on embeddings.

The label ratios of Zolfaghari Bengar et al. (CAIP 2021): 5,000 initial labels, +2,500 per round,
5 rounds, T = 100 epochs recorded, and the whole unlabeled pool (45,000 at round 0) scored after
every epoch, so each query is 5.6% of what is scored. The optimizer is theirs too (SGD lr 0.02,
momentum 0.9, Nesterov, weight decay 5e-4, lr halved at epochs 60 and 80, batch 256). What
changes: the network is a linear head (``model.name=mlp`` for a small MLP) on fixed embeddings,
standardised per dimension, with no augmentation (crops and flips do not apply to vectors).
A whole run took 21-30 s on 2 CPU cores with 512-dimensional embeddings
(``benchmarks/features_round.py``; 720 s with all 6,400 dimensions on a busy machine).

  # the embeddings: Coates et al.'s K-means features of the JPEG folder, no weights to download
  python -m jaxdisp.embed --root ../shared/datasets/cifar10-jpg --out cifar10_kmeans.npz
  python -m jaxdisp.embed --from_npz cifar10_kmeans.npz --pca_dim 512 --out cifar10_pca512.npz
  python -m jaxdisp.main --config configs/cifar10_features.py --workdir /tmp/feat \
      --config.dataset.root=cifar10_pca512.npz
  # any other .npz of the same layout (CLIP, DINOv2, ...): docs/features.md

``dataset.root`` has no default: name your ``.npz`` (or folder of ``.npy`` files).
"""

from jaxdisp import config_lib


def get_config():
  config = config_lib.base_config()
  config.dataset.source = 'embeddings'
  config.dataset.name = 'cifar10_features'
  config.dataset.root = ''  # required: --config.dataset.root=<file.npz or folder of .npy>
  config.dataset.num_classes = 0  # from the file
  config.model.name = 'linear'
  config.train.augment = False
  return config
