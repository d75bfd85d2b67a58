"""CIFAR-10 with the paper's protocol (Zolfaghari Bengar et al., CAIP 2021; the authors' code).

ResNet18 rebuilt every round; SGD lr 0.02, momentum 0.9, Nesterov, weight decay 5e-4, lr halved at
epochs 60 and 80 of 100; batch 256; random crop (pad 4) + flip; 5,000 initial labels, +2,500 per
round, 5 rounds; the whole unlabeled pool is scored after every epoch (T = 100).

  python -m jaxdisp.main --config configs/cifar10.py --workdir /tmp/cifar10
  # from the JPEG folder instead of tfds, small and quick:
  python -m jaxdisp.main --config configs/cifar10.py --config.dataset.source=folder \
      --config.dataset.root=../shared/datasets/cifar10-jpg --config.model.width=16 \
      --config.train.epochs=2 --config.al.rounds=1 --config.al.pool_subset=5000
"""

from jaxdisp import config_lib


def get_config():
  config = config_lib.base_config()
  config.dataset.source = 'tfds'
  config.dataset.name = 'cifar10'
  return config
