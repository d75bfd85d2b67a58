"""End to end: every strategy on 4 devices, determinism, SIGKILL + resume, outputs, bad inputs."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxdisp import config_lib
from jaxdisp.errors import JaxdispError
from jaxdisp.main import run_experiment

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The demo config shrunk to seconds: 600 synthetic 16x16 images, 6 epochs, 100 + 2 x 50 labels.
TINY = {
    'dataset.num_train': 600, 'dataset.num_test': 200, 'dataset.image_size': 16,
    'model.width': 8, 'train.epochs': 6, 'train.batch_size': 32, 'train.eval_batch_size': 128,
    'al.initial_size': 100, 'al.budget': 50, 'al.rounds': 2, 'checkpoint.every_epochs': 2,
    'log.progress_seconds': 0.0,
}


def tiny_config(**overrides):
  sys.path.insert(0, os.path.join(REPO, 'configs'))
  try:
    import demo  # pylint: disable=g-import-not-at-top
  finally:
    sys.path.pop(0)
  cfg = demo.get_config()
  for key, value in {**TINY, **overrides}.items():
    node = cfg
    *parents, leaf = key.split('.')
    for p in parents:
      node = node[p]
    node[leaf] = value
  return cfg


def cli(workdir, *overrides, env=None, check=True):
  args = [sys.executable, '-m', 'jaxdisp.main', '--config', os.path.join(REPO, 'configs/demo.py'),
          '--workdir', str(workdir)]
  args += [f'--config.{k}={v}' for k, v in TINY.items()] + list(overrides)
  proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600,
                        env={**os.environ, **(env or {})})
  if check and proc.returncode != 0:
    raise AssertionError(f'exit {proc.returncode}\n{proc.stderr[-3000:]}')
  return proc


def load_results(workdir):
  with open(os.path.join(workdir, 'results.json')) as f:
    return json.load(f)


def check_outputs(workdir, cfg):
  """results.json, selections.jsonl, TensorBoard events and the plot are all there and agree."""
  res = load_results(workdir)
  rounds = res['rounds']
  assert [r['round'] for r in rounds] == list(range(cfg.al.rounds + 1))
  labeled = cfg.al.initial_size
  seen = set()
  for r in rounds:
    assert r['num_labeled'] == labeled
    assert 0.0 <= r['test_accuracy'] <= 1.0
    assert set(r['seconds']) == {'train', 'score', 'select'}
    expected = cfg.al.budget if r['round'] < cfg.al.rounds else 0
    assert len(r['selected']) == len(set(r['selected'])) == expected
    assert not seen & set(r['selected'])
    seen |= set(r['selected'])
    labeled += expected
  with open(os.path.join(workdir, 'selections.jsonl')) as f:
    lines = [json.loads(line) for line in f]
  assert len(lines) == cfg.al.budget * cfg.al.rounds
  assert {l['id'] for l in lines} == seen
  assert set(lines[0]) >= {'round', 'id', 'score', 'modal_label', 'label_changes'}
  assert os.path.getsize(os.path.join(workdir, 'learning_curve.png')) > 1000
  events = os.listdir(os.path.join(workdir, 'tensorboard'))
  assert any(e.startswith('events.out.tfevents') for e in events)
  try:
    import tensorboard  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:  # the files' contents are checked where tensorboard is installed
    return res
  from test_lean_install import read_scalars  # pylint: disable=g-import-not-at-top
  scalars = read_scalars(os.path.join(workdir, 'tensorboard'))
  assert len(scalars['train/loss']) == len(rounds) * cfg.train.epochs
  assert scalars['al/test_accuracy'] == [(r['num_labeled'], pytest.approx(r['test_accuracy']))
                                         for r in rounds]
  return res


@pytest.mark.parametrize('strategy', config_lib.STRATEGIES)
def test_each_strategy_runs_end_to_end_on_four_devices(strategy, tmp_path):
  assert jax.device_count() == 4
  cfg = tiny_config(strategy=strategy, **({'model.dropout': 0.3} if strategy == 'bald' else {}))
  state = run_experiment(cfg, str(tmp_path))
  res = check_outputs(tmp_path, cfg)
  assert res['rounds'][-1]['test_accuracy'] > 0.2  # chance is 0.1
  diag = np.load(tmp_path / 'diagnostics' / 'round_0.npz')
  assert len(diag['ids']) == 500 and set(diag) >= {'dispersion', 'margin', 'entropy', 'correct'}
  assert ('bald' in diag) == (strategy == 'bald')
  assert np.isnan(diag['dispersion']).all() == (strategy != 'dispersion')
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
    ('--config.train.nosuchkey=1', "unknown config key 'nosuchkey'"),
    ('--config.train.epochs=abc', 'invalid literal'),
    ('--config.checkpoint.dir=/dev/null/ck', 'cannot use the checkpoint folder /dev/null/ck'),
])
def test_bad_input_exits_nonzero_with_one_line(override, message, tmp_path):
  extra = [override]
  if override == '--config.dataset.source=folder':
    extra.append(f'--config.dataset.root={tmp_path / "missing"}')
  if override == '--config.dataset.source=tfds':
    extra += ['--config.dataset.name=cifar10', f'--config.dataset.data_dir={tmp_path}']
  proc = cli(tmp_path / 'w', *extra, check=False)
  assert proc.returncode == 2
  lines = [l for l in proc.stderr.splitlines() if l.startswith('error:')]
  assert len(lines) == 1 and message in lines[0], proc.stderr[-2000:]
  assert proc.stderr.strip().endswith(lines[0])  # the last thing printed, no traceback
  assert not os.path.exists(tmp_path / 'w' / 'results.json')


def test_resuming_with_a_different_config_is_refused(tmp_path):
  run_experiment(tiny_config(**{'al.rounds': 1}), str(tmp_path))
  with pytest.raises(JaxdispError, match='different config.*train.learning_rate'):
    run_experiment(tiny_config(**{'al.rounds': 1, 'train.learning_rate': 0.1}), str(tmp_path))


@pytest.mark.parametrize('overrides, message', [
    ({'strategy': 'bald'}, 'needs Monte-Carlo dropout'),
    ({'dataset.placement': 'everywhere'}, "dataset.placement='everywhere' must be"),
    ({'dispersion.record_from_epoch': 6}, r'record_from_epoch=6 must be in \[0, train.epochs=6\)'),
    ({'al.pool_subset': 10}, 'smaller than al.budget=50'),
])
def test_inconsistent_config_values_are_refused(overrides, message):
  with pytest.raises(JaxdispError, match=message):
    config_lib.validate(tiny_config(**overrides))


def test_diverging_training_stops_naming_epoch_and_step_and_keeps_the_checkpoint(tmp_path):
  from jaxdisp.acquisition import NumericalError  # pylint: disable=g-import-not-at-top
  cfg = tiny_config(**{'train.learning_rate': 1e30, 'train.lr_milestones': (1.0,)})
  with pytest.raises(NumericalError, match=r'NaN/inf in round 0, epoch \d+, step \d+'):
    run_experiment(cfg, str(tmp_path))
  assert not os.path.exists(tmp_path / 'results.json')  # no round was recorded on bad numbers


def test_rounds_after_the_first_compile_nothing_on_four_devices():
  """The labeled set grows within one bucket: round 1 reuses every program of round 0."""
  from jaxdisp import al_loop, data, diagnostics  # pylint: disable=g-import-not-at-top
  diagnostics.enable()
  cfg = tiny_config()
  exp = al_loop.Experiment.create(cfg, data.load_dataset(cfg.dataset))
  assert exp.mesh.size == 4
  state = al_loop.al_round(exp.initial_state(), exp)  # round 0: compiles
  before = diagnostics.compile_counts()
  state = al_loop.al_round(state, exp)  # round 1: trains, scores, selects again
  after = diagnostics.compile_counts()
  assert len(state.selected(1)) == cfg.al.budget
  assert {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)} == {}
