"""Demo: the full label-dispersion loop on embedded synthetic data, in minutes on 2 CPU cores.

  python -m jaxdisp.main --config configs/demo.py --workdir /tmp/jaxdisp-demo

Every built-in strategy runs on it (``--config.strategy=S``) in at most 3x the time of
``random`` on 2 CPU cores (``benchmarks/demo_strategies.py`` measures it). Two strategies train
something besides the task model, and get demo-sized settings here (their defaults are the
papers' sizes, a job for an accelerator):

* ``vaal``: a VAE of width 8 (channels 8..64; the paper's 128..1024) trained for one pass over
  labeled + pool (``vaal.epochs=1``, 23 iterations at round 0; the paper's 100 passes).
* ``ensemble``: 3 members (the default 5 costs 5 trainings a round).

The other strategies use their defaults: they add at most pool passes to one training.
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
  # demo-sized settings of the strategies that train something more (see above)
  config.vaal.width = 8
  config.vaal.epochs = 1.0
  config.ensemble.members = 3
  return config
