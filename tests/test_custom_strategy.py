"""A user's own strategy, registered from a config file, runs end to end; the registry's rules."""

import json
import os

import ml_collections
import numpy as np
import pytest

from _helpers import REPO, TINY, cli, load_results
from jaxdisp import config_checks, config_lib, strategies
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


@pytest.mark.parametrize('flag, message', [
    ('--config.train.epochs=1',
     'strategy=dispersion_margin needs train.epochs >= 2 (a history to disperse)'),
    ('--config.dispersion_margin.margin_weight=2.0',  # its own group, checked by its check_group
     'dispersion_margin.margin_weight=2.0 must be in [0, 1]'),
])
def test_a_config_its_strategy_refuses_is_one_line(tmp_path, flag, message):
  proc = cli(tmp_path, flag, config='configs/custom_strategy.py', check=False)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1] == f'error: {message}'
  assert not os.path.exists(tmp_path / 'results.json')


def _parse(*flags_):
  """``--config=configs/custom_strategy.py`` plus ``flags_``, parsed as jaxdisp.main parses them
  (ml_collections' config flags); registers the file's strategy."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  argv = ['prog', '--config=' + os.path.join(REPO, 'configs', 'custom_strategy.py'), *flags_]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, '', flag_values=values, lock_config=True,
                                  sys_argv=argv)
  values(argv)
  return values.config


def test_a_config_file_strategy_owns_a_group_set_and_checked_from_the_command_line():
  try:
    cfg = _parse('--config.dispersion_margin.margin_weight=0.25')
    assert cfg.dispersion_margin.margin_weight == 0.25
    config_checks.validate(cfg)
    # the group is part of the schema of every config while the strategy is registered
    assert config_lib.flatten(config_lib.base_config())['dispersion_margin.margin_weight'] == 1.0
    with pytest.raises(Exception, match='margin_weight'):  # the flag parser checks the type
      _parse("--config.dispersion_margin.margin_weight='heavy'")
    cfg.dispersion_margin.margin_weight = 1.5
    with pytest.raises(ConfigError, match=r'margin_weight=1.5 must be in \[0, 1\]'):
      config_checks.validate(cfg)
    cfg.strategy = 'random'  # another strategy's run: the group cannot affect it, not checked
    config_checks.validate(cfg)
  finally:
    strategies.unregister('dispersion_margin')
  assert 'dispersion_margin' not in config_lib.base_config()


def test_group_rules_and_a_saved_config_without_a_group():
  group = ml_collections.ConfigDict({'alpha': 0.5})
  with pytest.raises(ValueError, match="config group 'train' is a core group"):
    strategies.register(strategies.Strategy(name='_g', summary='', config_group='train',
                                            config=group, score=_score, outputs=('probs',)))
  with pytest.raises(ValueError, match="config group 'bald' is declared by strategy 'bald'"):
    strategies.register(strategies.Strategy(name='_g', summary='', config_group='bald',
                                            config=group, score=_score, outputs=('probs',)))
  with pytest.raises(ValueError, match="diagnostic 'entropy' is taken"):
    strategies.register(strategies.Strategy(
        name='_g', summary='', score=_score, outputs=('probs',), diagnostics=(
            strategies.PoolScore('entropy', 'entropy', True, _score),)))
  try:
    strategies.register(strategies.Strategy(name='_g', summary='', config=group, score=_score,
                                            outputs=('probs',)))
    cfg = config_lib.base_config()
    assert cfg._g.alpha == 0.5  # pylint: disable=protected-access
    saved = cfg.to_dict()
    del saved['_g']  # a run made before the group existed: its keys count as their defaults
    assert config_lib.config_diff(saved, cfg.to_dict()) == []
    cfg._g.alpha = 0.75  # pylint: disable=protected-access
    assert config_lib.config_diff(saved, cfg.to_dict()) == ['_g.alpha: 0.5 -> 0.75']
  finally:
    strategies.unregister('_g')


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
  from jaxdisp import config_checks  # pylint: disable=g-import-not-at-top
  with pytest.raises(ConfigError, match='strategy=bald needs Monte-Carlo dropout'):
    config_checks.validate(tiny_config(strategy='bald'))
  config_checks.validate(tiny_config(strategy='bald', **{'model.dropout': 0.3}))
