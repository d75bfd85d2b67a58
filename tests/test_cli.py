"""The one config loader and the one override parser that jaxdisp.main and jaxdisp.sweep share."""

import os
import subprocess
import sys

import pytest

from _helpers import REPO
from jaxdisp import cli, config_lib, sweep
from jaxdisp.errors import ConfigError

DEMO = os.path.join(REPO, 'configs', 'demo.py')


def overridden(*args):
  """The demo config after the ``--config.KEY`` arguments ``args``, as jaxdisp.main sets them."""
  cfg, rest, overrides = cli.config_from_argv(['--config', DEMO, *args])
  assert rest == ['--config', DEMO]
  cli.apply_overrides(cfg, overrides)
  return cfg


@pytest.mark.parametrize('raw, current, expected', [
    ('true', False, True), ('T', False, True), ('1', False, True), ('Yes', False, True),
    ('false', True, False), ('f', True, False), ('0', True, False), ('NO', True, False),
    ('12', 0, 12), ('-3', 0, -3), ('1_000', 0, 1000), ('0x10', 0, 16), ('010', 0, 10),
    ('1e-3', 0.5, 0.001), ('3', 0.5, 3.0), ('inf', 0.5, float('inf')),
    ('(0.5,0.7)', (0.6, 0.8), (0.5, 0.7)), ('[0.5, 0.7]', (0.6, 0.8), (0.5, 0.7)),
    ('0.5,0.7', (0.6, 0.8), (0.5, 0.7)), ('0.5', (0.6, 0.8), (0.5,)), ('(1,)', (0.6,), (1,)),
    ('()', (0.6, 0.8), ()), ('(a,b)', (), ('(a,b)',)), ('a/b*', ('x',), ('a/b*',)),
    ('/some path/x', 'a', '/some path/x'), ('', 'a', ''), ('123', 'a', '123'),
    ('[1, 2]', None, [1, 2]), ('plain', None, 'plain'),
])
def test_a_value_is_parsed_as_the_type_of_its_key(raw, current, expected):
  got = cli.parse_value('k', raw, current)
  assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize('raw, current, message', [
    ('abc', 0, '--config.k=abc: expected int'), ('3.0', 0, '--config.k=3.0: expected int'),
    ('', 0, '--config.k=: expected int'), ('x', 0.5, '--config.k=x: expected float'),
    ('maybe', True, '--config.k=maybe: expected bool (true or false)'),
    ('abc', (0.6, 0.8), "expected a tuple, e.g. (0.6,0.8) (elements: float or int; got 'abc')"),
    ("('a',)", (0.6,), "(elements: float or int; got 'a')"),
    ("(0.5,'x')", (0.6,), "got 'x'"), ('(True,)', (1,), 'got True'),
    ('(a, b', (0.6,), 'expected a tuple, e.g. (0.6,)'),
])
def test_a_value_of_the_wrong_type_is_one_line(raw, current, message):
  with pytest.raises(ConfigError) as e:
    cli.parse_value('k', raw, current)
  assert message in str(e.value) and '\n' not in str(e.value)


def test_every_override_form_of_the_command_line():
  cfg = overridden('--config.train.epochs=3', '--config.al.rounds', '1', '-config.seed=4',
                   '--config.oracle.noise', '-0.1', '--noconfig.train.augment',
                   '--config.train.nesterov', '--config.dataset.root', '/a b',
                   "--config.log={'progress_seconds': 2, 'pool_diagnostics': False}")
  assert (cfg.train.epochs, cfg.al.rounds, cfg.seed, cfg.oracle.noise) == (3, 1, 4, -0.1)
  assert (cfg.train.augment, cfg.train.nesterov, cfg.dataset.root) == (False, True, '/a b')
  assert (cfg.log.progress_seconds, cfg.log.pool_diagnostics) == (2.0, False)
  assert type(cfg.log.progress_seconds) is float


def test_repeated_keys_the_last_wins_and_a_tuple_adds_elements():
  cfg = overridden('--config.train.epochs=3', '--config.train.epochs=4',
                   '--config.train.lr_milestones=0.5', '--config.train.lr_milestones=(0.7,0.9)')
  assert cfg.train.epochs == 4 and cfg.train.lr_milestones == (0.5, 0.7, 0.9)
  with pytest.raises(ConfigError, match="got 'x'"):  # the added elements are checked too
    overridden('--config.train.lr_milestones=0.5', '--config.train.lr_milestones=x')


@pytest.mark.parametrize('args, message', [
    (['--config.train.nosuchkey=1'], "unknown config key 'train.nosuchkey' (see "),
    (['--config.nosuch.key=1'], "unknown config key 'nosuch' (see "),
    (['--config.train.epochs.x=1'], "unknown config key 'train.epochs.x' (see "),
    (['--config.oracle=files'], '--config.oracle is a group of keys: set one of them '
                                '(oracle.kind, oracle.noise, oracle.noise_initial)'),
    (['--config.oracle'], '--config.oracle is a group of keys'),
    (['--config.oracle={"nope": 1}'], "unknown config key 'oracle.nope'"),
    (['--noconfig.train.epochs'], '--noconfig.KEY takes a bool key and no value'),
    (['--config.train.epochs'], '--config.train.epochs needs a value'),
])
def test_a_bad_override_is_one_line(args, message):
  with pytest.raises(ConfigError) as e:
    overridden(*args)
  assert message in str(e.value) and '\n' not in str(e.value)


def test_overrides_without_a_config_file_are_refused():
  assert cli.config_from_argv(['--workdir', 'w']) == (None, ['--workdir', 'w'], [])
  with pytest.raises(ConfigError, match='overrides need --config FILE'):
    cli.config_from_argv(['--config.train.epochs=3'])


def test_load_config_gives_a_fresh_config_and_one_line_errors(tmp_path):
  a, b = cli.load_config(DEMO), cli.load_config(DEMO)
  a.train.epochs = 1
  assert b.train.epochs == 15  # not the object another caller changed
  (tmp_path / 'syntax.py').write_text('def get_config(:\n')
  (tmp_path / 'none.py').write_text('x = 1\n')
  (tmp_path / 'raises.py').write_text('def get_config():\n  raise ValueError("boom\\nmore")\n')
  (tmp_path / 'dict.py').write_text('def get_config():\n  return {}\n')
  (tmp_path / 'arg.py').write_text(
      'from jaxdisp import cli\n\ndef get_config(epochs):\n'
      '  c = cli.load_config_beside(__file__, "base.py")\n  c.train.epochs = int(epochs)\n'
      '  return c\n')
  (tmp_path / 'base.py').write_text(open(DEMO).read())
  for name, message in [
      ('missing.py', f'cannot load --config: {tmp_path}/missing.py is not a file'),
      ('syntax.py', 'syntax.py: SyntaxError: invalid syntax (syntax.py, line 1)'),
      ('none.py', 'none.py: it defines no get_config()'),
      ('raises.py', 'raises.py: get_config() raised ValueError: boom more'),
      ('dict.py', 'dict.py: get_config() returned a dict, not a ConfigDict')]:
    with pytest.raises(ConfigError) as e:
      cli.load_config(str(tmp_path / name))
    assert str(e.value).endswith(message) and '\n' not in str(e.value), str(e.value)
  # FILE:ARG passes ARG to get_config (ml_collections' form); the file starts from another one.
  assert cli.load_config(f'{tmp_path}/arg.py:7').train.epochs == 7
  (tmp_path / 'base.py').unlink()
  with pytest.raises(ConfigError, match=r'^cannot load --config: .*base.py is not a file$'):
    cli.load_config(f'{tmp_path}/arg.py:7')


def test_custom_strategy_config_starts_from_the_demo():
  custom, demo = (config_lib.flatten(cli.load_config(os.path.join(REPO, 'configs', name)))
                  for name in ('custom_strategy.py', 'demo.py'))
  assert {k for k in demo if custom[k] != demo[k]} == {'strategy'}
  assert custom['strategy'] == 'dispersion_margin'


def test_sweep_takes_the_same_forms_with_set_first():
  args, cfg, overrides = sweep.parse_args(
      ['--config', DEMO, '--workdir', 'w', '--config.train.epochs', '3', '--set',
       'train.epochs=2', '--noconfig.train.augment', '--seeds', '0', '--set=al.rounds=1'])
  assert (args.seeds, cfg.train.epochs) == ('0', 15)  # the loaded file, overrides not applied
  assert overrides == [('train.epochs', '2'), ('al.rounds', '1'), ('train.epochs', '3'),
                       ('train.augment', 'false')]
  runs = sweep.plan(lambda: cli.load_config(DEMO), ['random'], [0], overrides)
  assert (runs[0][2].train.epochs, runs[0][2].al.rounds, runs[0][2].train.augment) == (3, 1, False)


def test_main_and_sweep_print_the_same_error_for_the_same_override(tmp_path, capsys):
  for override in ('--config.train.epochs=abc', "--config.train.lr_milestones=('a',)",
                   '--config.train.nosuchkey=1', '--config.oracle=files'):
    main = subprocess.run([sys.executable, '-m', 'jaxdisp.main', '--config', DEMO, '--workdir',
                           str(tmp_path / 'm'), override], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert main.returncode == 2
    code = sweep.main(['--config', DEMO, '--workdir', str(tmp_path / 's'), override])
    assert code == 2
    assert main.stderr.strip() == capsys.readouterr().err.strip()
    assert main.stderr.strip().startswith('error: ') and len(main.stderr.splitlines()) == 1
