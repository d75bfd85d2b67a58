"""A user's own strategy, registered from a config file, runs end to end; the registry's rules."""

import json

import numpy as np
import pytest

from _helpers import TINY, cli, load_results
from jaxdisp import strategies
from jaxdisp.errors import ConfigError


def test_strategy_registered_in_a_config_file_runs_end_to_end(tmp_path):
  cli(tmp_path, config='configs/custom_strategy.py')
  res = load_results(tmp_path)
  assert res['config']['strategy'] == 'dispersion_margin'
  budget, rounds = TINY['al.budget'], TINY['al.rounds']
  assert [len(r['selected']) for r in res['rounds']] == [budget] * rounds + [0]
  # Round 0's queries are the pool's highest dispersion x (1 - margin), computed here from the
  # round's diagnostics (the same model's dispersion and margin of every pool sample).
  diag = np.load(tmp_path / 'diagnostics' / 'round_0.npz')
  expected = dict(zip(diag['ids'].tolist(),
                      (diag['dispersion'] * (1.0 - diag['margin'])).tolist()))
  with open(tmp_path / 'selections.jsonl') as f:
    first = [json.loads(l) for l in f if json.loads(l)['round'] == 0]
  np.testing.assert_allclose([s['score'] for s in first], [expected[s['id']] for s in first],
                             rtol=1e-5, atol=1e-6)
  chosen = {s['id'] for s in first}
  assert max(v for i, v in expected.items() if i not in chosen) <= \
      min(expected[i] for i in chosen) + 1e-6
  assert any(s['modal_label'] is not None for s in first)  # the history was recorded


def test_a_config_its_strategy_refuses_is_one_line(tmp_path):
  proc = cli(tmp_path, '--config.train.epochs=1', config='configs/custom_strategy.py',
             check=False)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1] == (
      'error: strategy=dispersion_margin needs train.epochs >= 2 (a history to disperse)')


def _score(view):
  return view.outputs['probs'][:, 0]


def test_registry_rules():
  assert strategies.builtin_names()[:8] == ('dispersion', 'random', 'entropy', 'margin',
                                            'least_confidence', 'bald', 'coreset', 'badge')
  assert {'flips', 'variability', 'margin_dynamics'} <= set(strategies.builtin_names())
  with pytest.raises(ConfigError, match="strategy='nope' is not one of"):
    strategies.get('nope')
  with pytest.raises(ValueError, match='exactly one of score= or select='):
    strategies.Strategy(name='x', summary='', score=_score, select=lambda v, b: None)
  with pytest.raises(ValueError, match='unknown records'):
    strategies.Strategy(name='x', summary='', records=('logits',), score=_score)
  with pytest.raises(ValueError, match='unknown outputs'):
    strategies.register(strategies.Strategy(name='x', summary='', outputs=('gradients',),
                                            score=_score))
  with pytest.raises(ValueError, match='is built in'):
    strategies.register(strategies.Strategy(name='entropy', summary='', score=_score))
  try:
    first = strategies.register(strategies.Strategy(name='_test_first_class', summary='',
                                                    outputs=('probs',), score=_score))
    assert strategies.get('_test_first_class') is first
    assert strategies.names()[-1] == '_test_first_class'  # after the built-ins
    again = strategies.register(strategies.Strategy(name='_test_first_class', summary='again',
                                                    outputs=('probs',), score=_score))
    assert strategies.get('_test_first_class') is again  # a re-executed config file replaces it
  finally:
    strategies.unregister('_test_first_class')


def test_every_strategy_check_runs_from_the_registry():
  """Validation asks the strategy: bald refuses a model without dropout (the registry's check,
  not a name test in the core)."""
  from _helpers import tiny_config  # pylint: disable=g-import-not-at-top
  from jaxdisp import config_lib  # pylint: disable=g-import-not-at-top
  with pytest.raises(ConfigError, match='strategy=bald needs Monte-Carlo dropout'):
    config_lib.validate(tiny_config(strategy='bald'))
  config_lib.validate(tiny_config(strategy='bald', **{'model.dropout': 0.3}))
