r"""A strategy of your own, defined and registered in a config file: jaxdisp is not edited.

  python -m jaxdisp.main --config configs/custom_strategy.py --workdir /tmp/custom
  python -m jaxdisp.sweep --config configs/custom_strategy.py --workdir /tmp/cmp \
      --strategies dispersion_margin,dispersion,random --seeds 0,1,2

``dispersion_margin`` scores a pool sample by its label dispersion times ``1 - margin`` of the
round's final model: among samples the network changed its mind about equally often, those it
still separates least from a second class come first. It declares what it needs -- the
per-epoch prediction history (``records``) and the final model's probabilities (``outputs``) --
and jaxdisp records and computes exactly that, once per round; ``score`` sees a
``strategies.PoolView`` and returns one number per pool position (higher = query first). The
top ``al.budget`` are selected with the strategy's tie-break. Everything else (data, demo-sized
training) is ``configs/demo.py``.

It also owns a config group, ``cfg.dispersion_margin`` (``config``: the defaults;
``check_group``: one-line errors for bad values), part of the schema like the built-ins' groups:

  python -m jaxdisp.main --config configs/custom_strategy.py --workdir /tmp/custom \
      --config.dispersion_margin.margin_weight=0.5
"""

import ml_collections

from jaxdisp import strategies
from jaxdisp.errors import ConfigError

CONFIG = ml_collections.ConfigDict()
CONFIG.margin_weight = 1.0  # w in dispersion * (1 - w * margin); 0 = label dispersion alone


def dispersion_margin(view: strategies.PoolView):
  probs = view.outputs['probs']  # [P, C] of the final model; rows past view.num_pool: padding
  w = view.cfg.dispersion_margin.margin_weight
  return view.label_dispersion() * (1.0 + w * strategies.neg_margin(probs))  # d * (1 - w margin)


def check_config(cfg):  # what the strategy needs of the rest of the config
  if cfg.train.epochs < 2:
    raise ConfigError('strategy=dispersion_margin needs train.epochs >= 2 (a history to disperse)')


def check_group(cfg):  # its own group's values
  w = cfg.dispersion_margin.margin_weight
  if not 0.0 <= w <= 1.0:
    raise ConfigError(f'dispersion_margin.margin_weight={w} must be in [0, 1]')


strategies.register(strategies.Strategy(
    name='dispersion_margin',
    summary="label dispersion x (1 - margin) of the final model",
    reference='example in configs/custom_strategy.py (label dispersion: arXiv 2107.14707)',
    cost='the dispersion history (one pool pass per recorded epoch) + one final pool pass',
    records=('labels',), outputs=('probs',), score=dispersion_margin,
    check_config=check_config, config=CONFIG, check_group=check_group))


def get_config():
  from jaxdisp import cli  # pylint: disable=g-import-not-at-top
  config = cli.load_config_beside(__file__, 'demo.py')
  config.strategy = 'dispersion_margin'
  return config
