"""Acquisition strategies: one module per strategy (or family), all in one registry.

  from jaxdisp import strategies
  strategies.get('dispersion')        # a Strategy record
  strategies.names()                  # every registered name, built-ins first
  strategies.register(Strategy(...))  # a strategy of your own (see configs/custom_strategy.py)
  strategies.config_groups()          # the strategies' config groups (part of the schema)
  strategies.pool_scores()            # the scores they contribute to the pool diagnostics
"""

from jaxdisp.strategies.base import (
    ChunkInputs, PoolScore, PoolView, RECORDS, Strategy, TIE_RULES, builtin_names, check_groups,
    config_groups, entropy, get, least_confidence, names, neg_margin, pool_outputs, pool_scores,
    register, register_output, tie_key, tie_labeled_outputs, tie_outputs, unregister)
from jaxdisp.train import AuxHead  # pylint: disable=g-bad-import-order
# Built-ins, registered in this order (the order of reports and tables).
from jaxdisp.strategies import dispersion, random_sampling, uncertainty, bald, coreset, badge  # pylint: disable=g-bad-import-order
from jaxdisp.strategies import dynamics, ensemble, vaal, learning_loss  # pylint: disable=g-bad-import-order

__all__ = ['AuxHead', 'ChunkInputs', 'PoolScore', 'PoolView', 'RECORDS', 'Strategy', 'TIE_RULES',
           'builtin_names', 'check_groups', 'config_groups', 'entropy', 'get', 'least_confidence',
           'names', 'neg_margin', 'pool_outputs', 'pool_scores', 'register', 'register_output',
           'tie_key', 'tie_labeled_outputs', 'tie_outputs', 'unregister']
