"""Demo: the full label-dispersion loop on embedded synthetic data, in minutes on 2 CPU cores.

  python -m jaxdisp.main --config configs/demo.py --workdir /tmp/jaxdisp-demo
"""

from jaxdisp import config_lib


def get_config():
  config = config_lib.base_config()
  config.dataset.source = 'synthetic'
  config.dataset.name = 'synthetic'
  config.dataset.num_train = 3000
  config.dataset.num_test = 1000
  config.dataset.num_classes = 10
  config.dataset.image_size = 32
  config.model.name = 'small_cnn'
  config.model.width = 16
  config.train.epochs = 15
  config.train.batch_size = 64
  config.train.learning_rate = 0.05
  config.train.eval_batch_size = 512
  config.al.initial_size = 300
  config.al.budget = 200
  config.al.rounds = 3
  config.checkpoint.every_epochs = 5
  config.log.progress_seconds = 10.0
  return config
