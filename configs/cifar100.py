"""CIFAR-100 with the paper's protocol (same recipe as configs/cifar10.py)."""

from jaxdisp import config_lib


def get_config():
  config = config_lib.base_config()
  config.dataset.source = 'tfds'
  config.dataset.name = 'cifar100'
  config.dataset.num_classes = 100
  return config
