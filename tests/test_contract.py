"""The strategy contract (jaxdisp.contract): each broken rule is one line naming the strategy."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxdisp import contract
from jaxdisp.errors import JaxdispError, NumericalError, StrategyError


@pytest.mark.parametrize('scores, rule', [
    (jnp.zeros(7), 'it returned shape (7,)'),  # the real rows only, without the padding
    (jnp.zeros((8, 2)), 'it returned shape (8, 2)'),
    (jnp.float32(1.0), 'it returned shape ()'),
    (jnp.zeros(8, bool), 'real numbers'),
    ([0.0] * 8, 'it returned a list'),
    (None, 'it returned a NoneType'),
])
def test_a_score_of_the_wrong_kind_is_one_line(scores, rule):
  with pytest.raises(StrategyError) as e:
    contract.check_scores('mine', scores, capacity=8)
  assert str(e.value).startswith('strategy=mine: score must return')
  assert rule in str(e.value) and '\n' not in str(e.value)


@pytest.mark.parametrize('scores', [jnp.zeros(8), np.arange(8), jnp.arange(8, dtype=jnp.int32)])
def test_a_score_of_the_right_kind_passes(scores):
  contract.check_scores('mine', scores, capacity=8)


@pytest.mark.parametrize('positions, rule', [
    (np.full(20, 3), 'position 3 is returned 20 times (1 distinct)'),
    (np.arange(10), 'it returned shape (10,)'),
    (np.arange(40), 'it returned shape (40,)'),
    (np.arange(-1, 19), 'position -1 is negative'),
    (np.arange(81, 101), 'position 100 is padding'),
    (np.arange(20.0), 'its positions have dtype float64'),
    (list(range(20)), 'its positions are a list'),
])
def test_a_broken_selection_is_one_line(positions, rule):
  with pytest.raises(StrategyError) as e:
    contract.check_selection('mine', (positions, np.zeros(20)), budget=20, num_pool=100)
  msg = str(e.value)
  assert msg.startswith('strategy=mine: select must return (positions, scores) with exactly 20 '
                        'distinct integer positions in [0, 100)'), msg
  assert rule in msg and '\n' not in msg, msg


def test_a_valid_selection_comes_back_as_host_arrays():
  pos, sc = contract.check_selection('mine', (jnp.arange(99, 79, -1), jnp.ones(20)), 20, 100)
  assert pos.dtype == np.int64 and sc.dtype == np.float32
  np.testing.assert_array_equal(pos, np.arange(99, 79, -1))
  with pytest.raises(StrategyError, match='20 real scores'):
    contract.check_selection('mine', (np.arange(20), np.ones(19)), 20, 100)
  with pytest.raises(StrategyError, match='must return a pair'):
    contract.check_selection('mine', np.arange(20), 20, 100)


def test_a_function_that_raises_is_named_and_jaxdisp_errors_pass_through():
  def broken(view):
    raise KeyError('probs')
  with pytest.raises(StrategyError) as e:
    contract.call('mine', broken, 'score', None)
  assert str(e.value) == "strategy=mine: its score function raised KeyError: 'probs'"

  def diverged(view):
    raise NumericalError('NaN in the VAE loss')
  with pytest.raises(NumericalError):
    contract.call('mine', diverged, 'score', None)
  assert issubclass(StrategyError, JaxdispError)  # the CLI prints it as one line, exit 2


@pytest.mark.parametrize('what, message', [
    ("select=lambda view, budget: (jnp.full(budget, 3), jnp.zeros(budget))",
     'position 3 is returned 50 times (1 distinct)'),
    ("outputs=('probs',), score=lambda view: view.outputs['probs'][:7, 0]",
     'it returned shape (7,), dtype float32'),
])
def test_a_strategy_that_breaks_the_contract_stops_the_run_with_one_line(what, message, tmp_path):
  from _helpers import cli, strategy_config  # pylint: disable=g-import-not-at-top
  config = strategy_config(tmp_path / 'broken.py', 'broken', 'strategies.register(strategies.'
                           f"Strategy(name='broken', summary='breaks the contract', {what}))")
  proc = cli(tmp_path / 'run', '--config.al.rounds=1', check=False, config=config)
  assert proc.returncode == 2, proc.stderr[-3000:]
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith('error: strategy=broken: ') and message in last, last
  assert 'Traceback' not in proc.stderr
