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
"""

from jaxdisp import strategies
from jaxdisp.errors import ConfigError


def dispersion_margin(view: strategies.PoolView):
  probs = view.outputs['probs']  # [P, C] of the final model; rows past view.num_pool: padding
  return view.label_dispersion() * (1.0 + strategies.neg_margin(probs))  # d * (1 - margin)


def check_config(cfg):
  if cfg.train.epochs < 2:
    raise ConfigError('strategy=dispersion_margin needs train.epochs >= 2 (a history to disperse)')


strategies.register(strategies.Strategy(
    name='dispersion_margin',
    summary="label dispersion x (1 - margin) of the final model",
    reference='example in configs/custom_strategy.py (label dispersion: arXiv 2107.14707)',
    cost='the dispersion history (one pool pass per recorded epoch) + one final pool pass',
    records=('labels',), outputs=('probs',), score=dispersion_margin,
    check_config=check_config))


def get_config():
  from jaxdisp import cli  # pylint: disable=g-import-not-at-top
  config = cli.load_config_beside(__file__, 'demo.py')
  config.strategy = 'dispersion_margin'
  return config
