"""End to end: every strategy on 4 devices, determinism, SIGKILL + resume, outputs, bad inputs."""

import glob
import json
import os
import sys

import jax
import numpy as np
import pytest

from _helpers import check_outputs, cli, load_results, tiny_config
from jaxdisp import config_checks, config_lib, strategies
from jaxdisp.errors import JaxdispError, NumericalError
from jaxdisp.experiment import run as run_experiment

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'golden', 'tiny_demo.json')
sys.path.insert(0, os.path.dirname(GOLDEN))
import make_golden  # pylint: disable=g-import-not-at-top,wrong-import-position
sys.path.pop(0)
# The strategies pinned by the golden file (built-ins added later are tested on their own:
# tests/test_dynamics.py).
BUILTIN = make_golden.BUILTIN


@pytest.fixture(scope='module')
def golden_runs(tmp_path_factory):
  """Every built-in strategy on the tiny demo config (4 devices), and two on 1 device: run once
  per module (``tests/golden/make_golden.py`` lists the same cases)."""
  assert set(BUILTIN) <= set(strategies.builtin_names())
  runs = {}
  for name, strategy, overrides in make_golden.cases():
    workdir = tmp_path_factory.mktemp(name.replace('@', '-'))
    cfg = tiny_config(strategy=strategy, **overrides)
    runs[name] = (cfg, run_experiment(cfg, str(workdir)), workdir)
  return runs


@pytest.mark.parametrize('strategy', BUILTIN)
def test_each_strategy_runs_end_to_end_on_four_devices(strategy, golden_runs):
  assert jax.device_count() == 4
  cfg, state, tmp_path = golden_runs[strategy]
  res = check_outputs(tmp_path, cfg)
  assert res['rounds'][-1]['test_accuracy'] > 0.2  # chance is 0.1
  diag = np.load(tmp_path / 'diagnostics' / 'round_0.npz')
  assert len(diag['ids']) == 500 and set(diag) >= {'margin', 'entropy', 'correct'}
  assert ('bald' in diag) == (strategy == 'bald')
  # dispersion only where a history was recorded (no NaN column elsewhere)
  assert ('dispersion' in diag) == (strategy == 'dispersion')
  assert set(diag['score_names']) == set(diag) - {'ids', 'correct', 'score_names',
                                                  'score_labels', 'score_highest'}
  with open(tmp_path / 'selections.jsonl') as f:
    first = [json.loads(l) for l in f if json.loads(l)['round'] == 0]
  column = {'dispersion': 'dispersion', 'entropy': 'entropy', 'bald': 'bald'}.get(strategy)
  if column or strategy == 'margin':
    by_id = dict(zip(diag['ids'].tolist(), diag[column or 'margin'].tolist()))
    sign = -1.0 if strategy == 'margin' else 1.0  # margin queries the smallest margins
    np.testing.assert_allclose([sign * by_id[s['id']] for s in first],
                               [s['score'] for s in first], rtol=1e-5, atol=1e-6)
    threshold = min(sign * by_id[s['id']] for s in first)  # nothing unqueried scores higher
    assert max(sign * v for i, v in by_id.items() if i not in {s['id'] for s in first}) \
        <= threshold + 1e-6
  if strategy == 'dispersion':
    # Dispersion takes values k / T: the queried scores are the pool's highest.
    with open(tmp_path / 'selections.jsonl') as f:
      scores = [json.loads(l)['score'] for l in f]
    assert all(abs(s * 6 - round(s * 6)) < 1e-5 for s in scores)
  assert int(state.round) == cfg.al.rounds + 1


def golden_for_this_platform():
  """The golden file recorded on this machine's platform (jax version, CPU model and, where the
  file records them, the vector extensions), or None; of several that match, the one that names
  the most fields. ``tiny_demo.json`` was recorded before the strategy plug-in redesign (on an
  AMD EPYC, extensions not recorded); ``tiny_demo.intel-xeon.json`` and
  ``tiny_demo.amd-epyc-avx512.json`` from the code before the open-core refactor (issue 22,
  commit c836c9e) on an Intel Xeon and on an AMD EPYC with AVX-512 (a Zen 4, which rounds one
  accuracy of the older AMD file differently)."""
  matches = []
  for path in sorted(glob.glob(os.path.join(os.path.dirname(GOLDEN), 'tiny_demo*.json'))):
    with open(path) as f:
      golden = json.load(f)
    if make_golden.recorded_here(golden['platform']):
      matches.append(golden)
  return max(matches, key=lambda g: len(g['platform']), default=None)


def test_golden_results_are_unchanged_bit_for_bit(golden_runs):
  """Selected ids and test accuracies of every pinned run equal the golden file of this
  platform (same machine and jax version), recorded before the refactors it guards."""
  golden = golden_for_this_platform()
  if golden is None:
    pytest.skip(f'no golden results were recorded on {make_golden.platform_id()}: make them '
                'with tests/golden/make_golden.py --out tests/golden/tiny_demo.<cpu>.json on '
                'a commit whose results are known good')
  assert set(golden['runs']) == set(golden_runs)
  for name, (_, _, workdir) in golden_runs.items():
    got = make_golden.summarize(load_results(workdir))
    assert got == golden['runs'][name], name


def test_same_seed_selects_the_same_ids_and_another_seed_does_not(tmp_path):
  runs = [load_results(tmp_path / str(i)) for i in range(3) if run_experiment(
      tiny_config(seed=[0, 0, 1][i]), str(tmp_path / str(i))) is not None]
  sel = [[r['selected'] for r in res['rounds']] for res in runs]
  acc = [[r['test_accuracy'] for r in res['rounds']] for res in runs]
  assert sel[0] == sel[1] and acc[0] == acc[1]
  assert sel[0] != sel[2]


@pytest.mark.parametrize('override, message', [
    ('--config.train.epochs=0', 'train.epochs=0 must be positive'),
    ('--config.al.budget=400', 'exceeds the 600 training samples'),
    ('--config.al.initial_size=600', 'leaves no unlabeled pool'),
    ('--config.dataset.num_classes=1', '2..64 classes'),
    ('--config.model.name=vgg', "model.name='vgg' is not one of"),
    ('--config.strategy=bogus', "strategy='bogus' is not one of"),
    ('--config.dataset.source=folder', 'is not a folder'),
    ('--config.dataset.source=tfds', 'not prepared'),
    ('--config.train.nosuchkey=1', "unknown config key 'train.nosuchkey'"),
    ('--config.train.epochs=abc', '--config.train.epochs=abc: expected int'),
    ('--config.oracle=files', 'oracle is a group of keys: set one of them (oracle.kind, '),
    ('--config.checkpoint.dir=/dev/null/ck', 'cannot use the checkpoint folder /dev/null/ck'),
    ('--config.dispersion.record_every=5 --config.train.epochs=2',  # issue 17: 1 recorded epoch
     'strategy=dispersion would record the pool\'s predictions in 1 epoch(s)'),
])
def test_bad_input_exits_nonzero_with_one_line(override, message, tmp_path):
  extra = override.split()
  if override == '--config.dataset.source=folder':
    extra.append(f'--config.dataset.root={tmp_path / "missing"}')
  if override == '--config.dataset.source=tfds':
    extra += ['--config.dataset.name=cifar10', f'--config.dataset.data_dir={tmp_path}']
  proc = cli(tmp_path / 'w', *extra, check=False)
  assert proc.returncode == 2
  lines = [l for l in proc.stderr.splitlines() if l.startswith('error:')]
  assert len(lines) == 1 and message in lines[0], proc.stderr[-2000:]
  assert proc.stderr.strip().endswith(lines[0])  # the last thing printed, no traceback
  assert not os.path.exists(tmp_path / 'w')  # a failed start leaves no (empty) workdir behind


def test_resuming_with_a_different_config_is_refused(tmp_path):
  run_experiment(tiny_config(**{'al.rounds': 1}), str(tmp_path))
  with pytest.raises(JaxdispError, match='different config.*train.learning_rate'):
    run_experiment(tiny_config(**{'al.rounds': 1, 'train.learning_rate': 0.1}), str(tmp_path))


@pytest.mark.parametrize('overrides, message', [
    ({'strategy': 'bald'}, 'needs Monte-Carlo dropout'),
    ({'dataset.placement': 'everywhere'}, "dataset.placement='everywhere' must be"),
    ({'dispersion.record_from_epoch': 6}, r'record_from_epoch=6 must be in \[0, train.epochs=6\)'),
    ({'al.pool_subset': 10}, 'smaller than al.budget=50'),
    # issue 17: configs that cannot give dispersion what it needs
    ({'dispersion.record_every': 5, 'train.epochs': 2}, r'in 1 epoch\(s\) .*needs at least 2'),
    ({'dispersion.record_from_epoch': 5}, r'in 1 epoch\(s\) \(train.epochs=6, '
                                           r'dispersion.record_from_epoch=5'),
    ({'dispersion.mode_last_k': 25}, 'mode_last_k=25 exceeds the 6 recorded epochs'),
    ({'dispersion.mode_last_k': 3, 'dispersion.record_every': 3}, 'exceeds the 2 recorded'),
])
def test_inconsistent_config_values_are_refused(overrides, message):
  with pytest.raises(JaxdispError, match=message):
    config_checks.validate(tiny_config(**overrides))


@pytest.mark.parametrize('epochs, start, every', [(6, 0, 1), (6, 1, 2), (2, 0, 5), (100, 10, 7),
                                                  (5, 4, 1)])
def test_recorded_epochs_counts_the_history_rows_the_trainer_allocates(epochs, start, every):
  from jaxdisp import train  # pylint: disable=g-import-not-at-top
  overrides = {'train.epochs': epochs, 'dispersion.record_from_epoch': start,
               'dispersion.record_every': every}
  for strategy, always in (('dispersion', False), ('entropy', False), ('entropy', True)):
    cfg = tiny_config(strategy=strategy, **{'dispersion.record_always': always, **overrides})
    recording = train.Recording.from_config(cfg, enabled=strategy == 'dispersion' or always)
    rows = recording.num_rows
    assert config_checks.recorded_epochs(cfg) == rows
    assert rows == sum(recording.slot(e)[1] for e in range(epochs)) * (
        strategy == 'dispersion' or always)
  # Baselines keep no (or an optional) history: a short one is no reason to refuse them.
  config_checks.validate(tiny_config(strategy='entropy', **overrides))


def test_diverging_training_stops_naming_epoch_and_step_and_keeps_the_checkpoint(tmp_path):
  cfg = tiny_config(**{'train.learning_rate': 1e30, 'train.lr_milestones': (1.0,)})
  with pytest.raises(NumericalError, match=r'NaN/inf in round 0, epoch \d+, step \d+'):
    run_experiment(cfg, str(tmp_path))
  assert not os.path.exists(tmp_path / 'results.json')  # no round was recorded on bad numbers


def test_a_finite_but_blown_up_loss_stops_the_run_like_nan(tmp_path):
  """learning_rate=1e9 trains at loss ~1e28, finite: the divergence guard stops it (issue 17)."""
  cfg = tiny_config(**{'train.learning_rate': 1e9, 'al.rounds': 0})
  with pytest.raises(NumericalError, match=r'training diverged in round 0, epoch 0: mean loss '
                     r'\S+e\+\d+ > 10 x ln\(10 classes\) = 23; the last good checkpoint is kept '
                     r'\(lower train.learning_rate\)'):
    run_experiment(cfg, str(tmp_path))
  assert not os.path.exists(tmp_path / 'results.json')
  assert not os.listdir(tmp_path / 'checkpoints' / 'train')  # the blown-up epoch was not saved


def test_a_runner_without_a_checkpointer_stops_a_diverging_round_too():
  """``Runner(exp)``, as the benchmarks build it (no workdir, checkpointer or progress), runs the
  NaN and divergence policy like a checkpointed run."""
  from jaxdisp import data, experiment, rounds  # pylint: disable=g-import-not-at-top
  cfg = tiny_config(num_devices=1, **{'train.learning_rate': 1e30, 'train.lr_milestones': (1.0,),
                                      'al.rounds': 0})
  exp = rounds.Experiment.create(cfg, data.load_dataset(cfg.dataset))
  with pytest.raises(NumericalError, match=r'NaN/inf in round 0, epoch \d+, step \d+'):
    experiment.Runner(exp).round(exp.initial_state())


@pytest.mark.parametrize('overrides, message', [
    # bald.mc_samples feeds the BALD diagnostic of every run with dropout
    ({'strategy': 'entropy', 'model.dropout': 0.3, 'bald.mc_samples': 1},
     'bald.mc_samples=1 must be >= 2'),
    ({'strategy': 'bald', 'model.dropout': 0.3, 'bald.mc_samples': 1},
     'bald.mc_samples=1 must be >= 2'),
    # ensemble.members is checked once, by the ensemble, for an ensemble run
    ({'strategy': 'ensemble', 'ensemble.members': 0}, 'needs ensemble.members >= 2, got 0'),
    ({'strategy': 'badge', 'badge.first_center': 'median'}, "badge.first_center='median'"),
])
def test_a_strategy_group_is_checked_whenever_it_can_affect_the_run(overrides, message):
  with pytest.raises(JaxdispError, match=message):
    config_checks.validate(tiny_config(**overrides))


@pytest.mark.parametrize('overrides', [
    {'strategy': 'entropy', 'bald.mc_samples': 1},  # no dropout: no BALD anywhere
    {'strategy': 'entropy', 'model.dropout': 0.3, 'bald.mc_samples': 1,
     'log.pool_diagnostics': False},  # dropout, but no diagnostics
    {'strategy': 'random', 'ensemble.members': 0, 'badge.first_center': 'median',
     'vaal.width': 0, 'learning_loss.hidden': 0},
])
def test_a_group_that_cannot_affect_the_run_is_not_checked(overrides):
  config_checks.validate(tiny_config(**overrides))
  assert set(strategies.config_groups()) == {'bald', 'badge', 'ensemble', 'vaal',
                                             'learning_loss'}
  assert set(strategies.config_groups()) <= set(config_lib.base_config())
  assert not set(strategies.config_groups()) & set(config_lib.core_config())


def test_rounds_after_the_first_compile_nothing_on_four_devices():
  """The labeled set grows within one bucket: round 1 reuses every program of round 0."""
  from jaxdisp import compile_counter, data, rounds  # pylint: disable=g-import-not-at-top
  compile_counter.enable()
  cfg = tiny_config()
  exp = rounds.Experiment.create(cfg, data.load_dataset(cfg.dataset))
  assert exp.mesh.size == 4
  state = rounds.al_round(exp.initial_state(), exp)  # round 0: compiles
  before = compile_counter.compile_counts()
  state = rounds.al_round(state, exp)  # round 1: trains, scores, selects again
  after = compile_counter.compile_counts()
  assert len(state.selected(1)) == cfg.al.budget
  assert {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)} == {}
