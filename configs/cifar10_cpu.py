"""CIFAR-10 at CPU scale: the paper's loop, shrunk so one experiment takes minutes on 2 cores.

What differs from the paper's protocol (configs/cifar10.py):
- data: the JPEG (quality 75) copy of CIFAR-10 in ../shared/datasets/cifar10-jpg, not the original
  images from tfds;
- model: a small CNN (width 32) instead of ResNet18, with dropout 0.3 before the classifier (so
  the report can rank the pool by BALD too);
- training: 20 epochs instead of 100 (the lr is still halved at 60% and 80% of them: epochs 12
  and 16), batch 128 instead of 256, learning rate 0.05 instead of 0.02;
- labels: 1,000 initial + 4 rounds x 1,000 instead of 5,000 + 5 x 2,500;
- scoring: each round scores a keyed random 5,000-image subset of the unlabeled pool after every
  epoch (T = 20) instead of the whole pool (T = 100).
The same as the paper: SGD with momentum 0.9, Nesterov, weight decay 5e-4, lr factor 0.5 at the
milestones, random crop (pad 4) + horizontal flip, a fresh model every round, dispersion
1 - f/T over all recorded epochs. One experiment took 10-18 minutes on 2 CPU cores here (with
other work on the machine); the 3 strategies x 3 seeds of docs/results/ took 2 h 7 min.

  python -m jaxdisp.sweep --config configs/cifar10_cpu.py \
      --strategies dispersion,random,entropy --seeds 0,1,2 --workdir runs/cifar10_cpu
"""

from jaxdisp import config_lib


def get_config():
  config = config_lib.base_config()
  config.dataset.source = 'folder'
  config.dataset.name = 'cifar10'
  config.dataset.root = '../shared/datasets/cifar10-jpg'
  config.model.name = 'small_cnn'
  config.model.width = 32
  # Monte-Carlo dropout before the classifier, for every strategy: the report compares the
  # samples dispersion ranks first with those BALD ranks first (the paper's uncertainty figure).
  config.model.dropout = 0.3
  config.train.epochs = 20
  config.train.batch_size = 128
  config.train.learning_rate = 0.05
  config.train.eval_batch_size = 1000
  config.al.initial_size = 1000
  config.al.budget = 1000
  config.al.rounds = 4
  config.al.pool_subset = 5000
  config.log.progress_seconds = 60.0
  return config
