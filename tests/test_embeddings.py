"""Active learning on frozen features (``dataset.source=embeddings``): every strategy end to end
on class-separable Gaussian blobs, the .npy folder (memory-mapped) against the .npz bit for bit,
a sharded placement, resume, ids, the linear head against NumPy, and every bad input's one line."""

import json
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _helpers import cli, tiny_config
from jaxdisp import config_checks, data, experiment, input_pipeline, models, parallel, rounds
from jaxdisp import strategies, train
from jaxdisp.errors import ConfigError, JaxdispError

N, M, D, C = 300, 100, 16, 4
NAMES = ('ant', 'bee', 'cat', 'dog')


def blobs(seed=0, dtype=np.float32):
  """Four Gaussian blobs in 16 dimensions (unit noise, centres ~5 apart), an offset and a scale
  per dimension (so standardisation matters), class names and a file name per training row."""
  rng = np.random.default_rng(seed)
  centres = rng.normal(0.0, 1.5, (C, D))
  offset, scale = rng.normal(0, 5, D), rng.uniform(0.5, 3.0, D)

  def split(n):
    y = rng.permutation(np.arange(n) % C)
    return ((centres[y] + rng.normal(0, 1, (n, D))) * scale + offset).astype(dtype), y

  (x_train, y_train), (x_test, y_test) = split(N), split(M)
  return dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
              class_names=np.array(NAMES), files=np.array([f'img/{i:04d}.jpg' for i in range(N)]))


def write_npy_folder(folder, arrays):
  os.makedirs(folder, exist_ok=True)
  for key, a in arrays.items():
    np.save(os.path.join(folder, f'{key}.npy'), a)
  return str(folder)


@pytest.fixture(scope='module')
def sources(tmp_path_factory):
  """The same blobs as one .npz and as a folder of .npy files."""
  root, arrays = tmp_path_factory.mktemp('emb'), blobs()
  np.savez(root / 'blobs.npz', **arrays)
  return str(root / 'blobs.npz'), write_npy_folder(root / 'blobs', arrays), arrays


FEATURES = {'dataset.source': 'embeddings', 'dataset.num_classes': 0, 'model.name': 'linear',
            'train.augment': False, 'train.epochs': 3, 'train.learning_rate': 0.3,
            'train.eval_batch_size': 64, 'al.initial_size': 40, 'al.budget': 20, 'al.rounds': 1,
            'model.hidden': 16, 'log.pool_diagnostics': False}


def features_config(root, **overrides):
  return tiny_config(**{**FEATURES, 'dataset.root': root, **overrides})


def run_rounds(cfg):
  """The whole experiment (every round) without a workdir: the final ALState."""
  exp = rounds.Experiment.create(cfg, data.load_dataset(cfg.dataset))
  return experiment.Runner(exp).run(exp.initial_state())


# What each strategy needs on top of FEATURES.
NEEDS = {'bald': {'model.dropout': 0.3}, 'ensemble': {'ensemble.members': 2},
         'learning_loss': {'model.name': 'mlp'}}


@pytest.mark.parametrize('strategy', strategies.builtin_names())
def test_every_strategy_runs_on_embeddings(strategy, sources):
  cfg = features_config(sources[0], strategy=strategy, num_devices=1, **NEEDS.get(strategy, {}))
  config_checks.validate(cfg)
  state = run_rounds(cfg)
  assert int(state.round) == cfg.al.rounds + 1
  initial, chosen = set(np.flatnonzero(state.labeled_round == 0)), state.selected(0).tolist()
  assert len(initial) == cfg.al.initial_size
  assert len(chosen) == len(set(chosen)) == cfg.al.budget
  assert all(0 <= i < N for i in chosen) and not initial & set(chosen)
  # Separable blobs: a linear head on 40-60 labels is far above chance (0.25).
  assert float(state.test_accuracy[-1]) >= 0.9, state.test_accuracy


def test_learning_loss_on_a_linear_head_is_refused_with_one_line(sources):
  with pytest.raises(ConfigError) as e:
    config_checks.validate(features_config(sources[0], strategy='learning_loss'))
  assert "model's hidden layers, and model.name=linear has none: use model.name=mlp" in str(e.value)
  assert '\n' not in str(e.value)


@pytest.mark.parametrize('overrides, message', [
    ({'model.name': 'resnet18'}, 'model.name=resnet18 is an image model, and '
     'dataset.source=embeddings gives feature vectors: use model.name=linear or mlp'),
    ({'dataset.source': 'synthetic', 'model.name': 'mlp'}, 'model.name=mlp is a head for '
     'feature vectors (dataset.source=embeddings), and dataset.source=synthetic gives images'),
    ({'train.augment': True}, 'train.augment=True crops and flips images'),
    ({'dispersion.augmented_views': True}, 'dispersion.augmented_views=True records'),
    ({'model.name': 'mlp', 'model.depth': 0}, 'model.depth=0 must be >= 1'),
    ({'dataset.root': ''}, 'dataset.source=embeddings needs --config.dataset.root='),
])
def test_models_and_augmentation_must_fit_the_inputs(overrides, message, sources):
  with pytest.raises(ConfigError, match=None) as e:
    config_checks.validate(features_config(sources[0], **overrides))
  assert message in str(e.value) and '\n' not in str(e.value)


def test_the_setup_refuses_a_model_that_does_not_fit_the_data_shape(sources):
  """The same checks on the data itself (a Dataset made in code, whatever the config says)."""
  mesh = parallel.make_mesh(1)
  cfg = tiny_config()  # small_cnn, augmented
  with pytest.raises(ConfigError, match=r'model.name=small_cnn is an image model, and the '
                     r'dataset \(samples of shape \(16,\)\) gives feature vectors'):
    train.make_setup(cfg, mesh, (D,), C, record=False)
  with pytest.raises(ConfigError, match='image augmentation .* does not apply to feature vectors'):
    train.make_setup(features_config(sources[0], **{'train.augment': True}), mesh, (D,), C, False)
  with pytest.raises(ConfigError, match='model.name=linear is a head for feature vectors'):
    train.make_setup(features_config(sources[0]), mesh, (16, 16, 3), C, record=False)


def test_npy_folder_is_memory_mapped_and_gives_the_npz_results_bit_for_bit(sources, tmp_path):
  """dispersion (a recorded history, random tie-breaks) on 4 devices: .npz replicated, the .npy
  folder replicated and sharded, and the .npz run with a workdir, all select the same ids."""
  npz, folder, arrays = sources
  ds = data.load_dataset(features_config(folder).dataset)
  assert isinstance(ds.train_images, np.memmap) and ds.image_shape == (D,)
  assert ds.class_names == NAMES and ds.train_ids[7] == 'img/0007.jpg'
  np.testing.assert_array_equal(ds.train_images, arrays['x_train'])
  runs = [run_rounds(features_config(npz)), run_rounds(features_config(folder)),
          run_rounds(features_config(folder, **{'dataset.placement': 'sharded'}))]
  with_workdir = experiment.run(features_config(npz), str(tmp_path / 'w'))
  for state in runs[1:] + [with_workdir]:
    np.testing.assert_array_equal(state.selected(0), runs[0].selected(0))
    np.testing.assert_array_equal(state.test_accuracy, runs[0].test_accuracy)
  # selections.jsonl names the source image of every queried row (the `files` array)
  with open(tmp_path / 'w' / 'selections.jsonl') as f:
    lines = [json.loads(line) for line in f]
  assert [l['id'] for l in lines] == runs[0].selected(0).tolist()
  assert [l['file'] for l in lines] == [f'img/{i:04d}.jpg' for i in runs[0].selected(0)]
  with open(tmp_path / 'w' / 'results.json') as f:
    assert json.load(f)['dataset']['class_names'] == list(NAMES)


def test_a_run_killed_mid_round_resumes_to_the_uninterrupted_ids(sources, tmp_path, monkeypatch,
                                                                 caplog):
  """Round and training checkpoints of a vector model (no BatchNorm statistics) restore: stopped
  after epoch 3 of round 1 (the epoch-2 checkpoint kept), the rerun gives the straight run."""
  overrides = {'train.epochs': 4, 'al.rounds': 2, 'checkpoint.every_epochs': 2,
               'model.name': 'mlp', 'model.dropout': 0.2, 'log.pool_diagnostics': True}
  straight = experiment.run(features_config(sources[0], **overrides), str(tmp_path / 'a'))
  trained_epoch = experiment.Runner.trained_epoch

  def killed(self, ctx, epoch, metrics):
    trained_epoch(self, ctx, epoch, metrics)
    if ctx.round == 1 and epoch == 2:
      raise RuntimeError('killed')

  monkeypatch.setattr(experiment.Runner, 'trained_epoch', killed)
  with pytest.raises(RuntimeError, match='killed'):
    experiment.run(features_config(sources[0], **overrides), str(tmp_path / 'b'))
  monkeypatch.undo()
  with open(tmp_path / 'b' / 'results.json') as f:
    assert len(json.load(f)['rounds']) == 1  # round 0 recorded, round 1 stopped mid-way
  caplog.set_level(logging.INFO, logger='absl')
  resumed = experiment.run(features_config(sources[0], **overrides), str(tmp_path / 'b'))
  assert 'round 1: resuming training at epoch 2' in caplog.text
  for r in range(3):
    np.testing.assert_array_equal(resumed.selected(r), straight.selected(r))
  np.testing.assert_array_equal(resumed.test_accuracy, straight.test_accuracy)


def test_vector_statistics_are_the_float64_ones_and_survive_float16_and_subsets(tmp_path):
  arrays = blobs(seed=1, dtype=np.float16)
  arrays['x_train'][:, 3] = 7.0  # a constant dimension: std 1, it becomes 0
  folder = write_npy_folder(tmp_path / 'f16', arrays)
  for imbalance in (1.0, 2.0):  # 2: a long-tailed subset of the memory map (data.RowSubset)
    ds = data.load_dataset(features_config(folder, **{'dataset.imbalance': imbalance}).dataset)
    x = np.asarray(ds.train_images, np.float64)
    mean, std = input_pipeline.vector_stats(ds.train_images, chunk_values=7 * D)  # blocks of 7 rows
    np.testing.assert_allclose(mean, x.mean(0), rtol=1e-6)
    expected = x.std(0)
    expected[3] = 1.0
    np.testing.assert_allclose(std, expected, rtol=1e-6)
    dev = input_pipeline.put_data(ds, parallel.make_mesh(4), shard_train=imbalance == 2.0)
    assert dev.train_images.dtype == jnp.float16 and dev.train_images.shape[1:] == (D,)
    np.testing.assert_array_equal(dev.mean, mean)
    np.testing.assert_array_equal(dev.std, std)
  assert ds.num_train < N and isinstance(ds.train_images, data.RowSubset)
  z = input_pipeline.normalize(jnp.asarray(arrays['x_train']), mean, std)
  assert np.all(np.asarray(z)[:, 3] == 0.0)


def test_the_linear_head_is_logistic_regression_and_one_sgd_step_matches_numpy(sources):
  """Logits = standardised x @ W + b; embed() gives the standardised x (core-set and BADGE
  then work on the embeddings); one SGD step (Nesterov momentum, weight decay on W and b, mean
  cross-entropy) equals the NumPy step."""
  cfg = features_config(sources[0], num_devices=1, **{'train.weight_decay': 1e-3})
  ds = data.load_dataset(cfg.dataset)
  setup = train.make_setup(cfg, parallel.make_mesh(1), ds.image_shape, ds.num_classes, False)
  assert isinstance(setup.model.backbone, models.IdentityBackbone)
  dev = input_pipeline.put_data(ds, setup.mesh)
  state = train.init_state(setup, jax.random.PRNGKey(3))
  w0 = np.asarray(state.params['head']['Dense_0']['kernel'], np.float64)
  b0 = np.asarray(state.params['head']['Dense_0']['bias'], np.float64)
  x = np.asarray(ds.train_images, np.float64)
  z = (x - x.mean(0)) / x.std(0)
  v = train.variables(state)
  idx = jnp.arange(32)
  inputs = train.model_inputs(setup, dev, idx)
  np.testing.assert_allclose(setup.model.apply(v, inputs, method='embed'), z[:32], atol=2e-5)
  np.testing.assert_allclose(setup.model.apply(v, inputs, train=False), z[:32] @ w0 + b0,
                             atol=1e-4)
  new, _ = train.train_step(setup, state, dev, idx, jnp.ones(32, bool), jax.random.PRNGKey(0))
  logits = z[:32] @ w0 + b0
  p = np.exp(logits - logits.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  g = p - np.eye(C)[ds.train_labels[:32]]  # d(mean CE)/d(logits) * 32
  t = cfg.train
  step = lambda grad, w: t.learning_rate * (1 + t.momentum) * (grad + t.weight_decay * w)
  np.testing.assert_allclose(new.params['head']['Dense_0']['kernel'],
                             w0 - step(z[:32].T @ g / 32, w0), atol=1e-5)
  np.testing.assert_allclose(new.params['head']['Dense_0']['bias'],
                             b0 - step(g.mean(0), b0), atol=1e-5)


def test_the_mlp_gives_its_hidden_layers_as_stages():
  cfg = tiny_config(**{'model.name': 'mlp', 'model.hidden': 8, 'model.depth': 3})
  model = models.create_model(cfg.model, C)
  x = jnp.ones((5, D))
  v = model.init(jax.random.PRNGKey(0), x, train=False)
  feats, stages = model.backbone.apply({'params': v['params']['backbone']}, x, train=False,
                                       stages=True)
  assert [s.shape for s in stages] == [(5, 8)] * 3 and feats.shape == (5, 8)
  np.testing.assert_array_equal(feats, stages[-1])
  assert set(v) == {'params'}  # no BatchNorm


def bad(arrays, **changes):
  """``arrays`` with some arrays replaced (None: removed)."""
  out = {k: v for k, v in arrays.items() if k not in changes}
  out.update({k: v for k, v in changes.items() if v is not None})
  return out


def _nan_at(a, row, value=np.nan):
  a = a.copy()
  a[row, 5] = value
  return a


A = blobs()
BAD_NPZ = {  # name -> (arrays, the message's tail)
    'missing': (bad(A, y_test=None), 'blobs.npz: no y_test among the arrays in the .npz'),
    'rank': (bad(A, x_train=A['x_train'].reshape(N, 4, 4)),
             'blobs.npz:x_train: x_train must be [N, D] (one feature vector per row), got '
             'shape (300, 4, 4)'),
    'label rank': (bad(A, y_train=A['y_train'][:, None]), 'y_train must be [N]'),
    'mixed floats': (bad(A, x_test=A['x_test'].astype(np.float16)),
                     'x_train is float32 but x_test is float16'),
    'float64': (bad(A, x_train=A['x_train'].astype(np.float64)),
                'x_train is float64; embeddings must be float16 or float32'),
    'integer x': (bad(A, x_test=A['x_test'].astype(np.int32)), 'x_test is int32;'),
    'nan': (bad(A, x_train=_nan_at(A['x_train'], 123)), 'x_train row 123 holds NaN or inf'),
    'inf': (bad(A, x_test=_nan_at(A['x_test'], 9, np.inf)), 'x_test row 9 holds NaN or inf'),
    'float labels': (bad(A, y_train=A['y_train'].astype(np.float32)),
                     'y_train is float32; labels must be integer class indices'),
    'label range': (bad(A, y_test=np.where(A['y_test'] == 0, 4, A['y_test'])),
                    'y_test holds the label 4 but class_names names 4 classes'),
    'negative label': (bad(A, y_train=A['y_train'] - 1), 'y_train holds the label -1'),
    'dimensions': (bad(A, x_test=A['x_test'][:, :8]),
                   'x_train has 16 dimensions but x_test has 8'),
    'files length': (bad(A, files=A['files'][:-1]), 'files has 299 names for the 300 rows'),
    'class_names length': (bad(A, class_names=A['class_names'][:3]),
                           'y_train holds the label 3 but class_names names 3 classes'),
    'label count': (bad(A, y_test=A['y_test'][:-1]), 'y_test has 99 labels for the 100 rows'),
}


@pytest.mark.parametrize('case', list(BAD_NPZ) + ['corrupt', 'objects', 'truncated npy'])
def test_bad_embeddings_exit_2_with_one_line_and_write_nothing(case, tmp_path):
  root = str(tmp_path / 'blobs.npz')
  if case in BAD_NPZ:
    arrays, message = BAD_NPZ[case]
    np.savez(root, **arrays)
  elif case == 'corrupt':
    np.savez(root, **A)
    with open(root, 'r+b') as f:
      f.truncate(os.path.getsize(root) // 2)
    message = 'cannot read'
  elif case == 'objects':
    np.savez(root, **bad(A, class_names=np.array(list(NAMES), dtype=object)))
    message = 'blobs.npz:class_names: it holds Python objects; save strings as a string array'
  else:  # a folder whose x_train.npy was cut short
    root = write_npy_folder(tmp_path / 'blobs', A)
    path = os.path.join(root, 'x_train.npy')
    with open(path, 'r+b') as f:
      f.truncate(os.path.getsize(path) - 64)
    message = f'cannot read {path}:'
  flags = [f'--config.{k}={v}' for k, v in FEATURES.items()] + [f'--config.dataset.root={root}']
  proc = cli(tmp_path / 'w', *flags, check=False)
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = [l for l in proc.stderr.splitlines() if l.startswith('error:')]
  assert len(lines) == 1 and message in lines[0], proc.stderr[-2000:]
  assert proc.stderr.strip().endswith(lines[0])  # the last thing printed, no traceback
  assert not os.path.exists(tmp_path / 'w')  # nothing written: not even the workdir


def test_refused_data_leaves_an_existing_empty_workdir_empty(tmp_path):
  np.savez(tmp_path / 'nan.npz', **bad(A, x_train=_nan_at(A['x_train'], 0)))
  os.makedirs(tmp_path / 'w')
  with pytest.raises(JaxdispError, match='x_train row 0 holds NaN or inf'):
    experiment.run(features_config(str(tmp_path / 'nan.npz')), str(tmp_path / 'w'))
  assert os.listdir(tmp_path / 'w') == []
