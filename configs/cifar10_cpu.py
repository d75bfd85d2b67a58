"""CIFAR-10 at CPU scale: the paper's loop, shrunk so one experiment takes minutes on 2 cores.

Real CIFAR-10 images from the JPEG folder (../shared/datasets/cifar10-jpg); a small CNN (width 32)
instead of ResNet18; 20 epochs instead of 100 (the step schedule keeps its 60%/80% milestones);
1,000 initial labels + 4 rounds x 1,000; each round scores a keyed random 5,000-image subset of
the unlabeled pool after every epoch (T = 20); dropout 0.3 before the classifier (so the
report can rank the pool by BALD too). Everything else is the paper's protocol. One
experiment took 10-18 minutes on 2 CPU cores here (with other work on the machine); the
3 strategies x 3 seeds of docs/results/ took 2 h 7 min.

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
