"""strategy=learning_loss (Yoo & Kweon, CVPR 2019): the ranking loss against the reference
formulation written out in NumPy (padded batches included), the stage features of both backbones,
the gradient detach, the query = the top predicted loss of the final model, 1 = 4 devices, a
SIGKILL mid-round resumed to the same ids, and the config checks."""

import signal
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from _helpers import check_outputs, cli, load_results, tiny_config
from jaxdisp import config_checks, data, input_pipeline, models, parallel, rounds, strategies, train
from jaxdisp.errors import ConfigError
from jaxdisp.strategies import learning_loss as ll

MESHES = {d: parallel.make_mesh(d) for d in (1, 4)}


# ---- the loss against the reference's LossPredLoss ---------------------------------------------

def np_loss_pred_loss(pred, target, margin=1.0):
  """The reference's LossPredLoss (reduction 'mean'), written out plainly."""
  b = len(pred)
  assert b % 2 == 0, 'the batch size is not even.'
  x = (pred - pred[::-1])[:b // 2]
  t = (target - target[::-1])[:b // 2]
  one = 2 * np.sign(np.clip(t, 0, None)) - 1
  return np.sum(np.clip(margin - one * x, 0, None)) / len(x)


def test_ranking_loss_is_the_references_and_a_padded_batch_equals_the_unpadded_one():
  rng = np.random.default_rng(0)
  for b, margin in ((8, 1.0), (32, 0.5), (2, 2.0)):
    pred = rng.normal(size=b).astype(np.float32)
    target = rng.exponential(size=b).astype(np.float32)
    target[1] = target[-2]  # a tie: the reference's sign(clamp(0)) = 0 gives -1
    np.testing.assert_allclose(float(ll.loss_pred_loss(pred, target, None, margin)),
                               np_loss_pred_loss(pred, target, margin), rtol=1e-6)
  # Padded: 10 real rows of 16 (padding last, as train.epoch_step pads; or scattered) = the 10.
  pred = rng.normal(size=16).astype(np.float32)
  target = rng.exponential(size=16).astype(np.float32)
  want = np_loss_pred_loss(pred[:10], target[:10])
  mask = np.arange(16) < 10
  np.testing.assert_allclose(float(ll.loss_pred_loss(pred, target, mask)), want, rtol=1e-6)
  perm = rng.permutation(16)
  scattered = np.zeros(16, np.float32), np.zeros(16, np.float32), np.zeros(16, bool)
  real = np.sort(perm[:10])  # real rows keep their order
  for arr, src in zip(scattered, (pred[:10], target[:10], np.ones(10, bool))):
    arr[real] = src
  np.testing.assert_allclose(float(ll.loss_pred_loss(*scattered)), want, rtol=1e-6)
  # Padding values never matter; fewer than 2 real rows: no pair, loss 0; target: no gradient.
  noisy = np.where(mask, pred, 1e6).astype(np.float32)
  np.testing.assert_allclose(float(ll.loss_pred_loss(noisy, target, mask)), want, rtol=1e-6)
  assert float(ll.loss_pred_loss(pred, target, np.arange(16) < 1)) == 0.0
  g_pred, g_target = jax.grad(ll.loss_pred_loss, argnums=(0, 1))(
      jnp.asarray(pred), jnp.asarray(target), jnp.asarray(mask))
  assert np.abs(np.asarray(g_pred)).sum() > 0 and not np.asarray(g_target).any()
  assert not np.asarray(g_pred)[10:].any()  # padding rows get no gradient


# ---- the models' stage features and the loss-prediction head -----------------------------------

SMALL_CNN_STAGES = [(16, 16, 8), (8, 8, 16), (4, 4, 32)]
RESNET_STAGES = [(16, 16, 4), (8, 8, 8), (4, 4, 16), (2, 2, 32)]


def test_resnet18_exposes_its_four_stages_and_the_head_predicts_one_loss_per_sample():
  """Shapes only (traced, nothing compiled); the numbers: the extended case below."""
  cfg = tiny_config(**{'model.name': 'resnet18', 'model.width': 4}).model
  x = jnp.zeros((6, 16, 16, 3))
  plain = models.create_model(cfg, 10)
  with_head = train.with_aux_head(plain, ll.LossNet(hidden=16))
  v0 = jax.eval_shape(lambda: plain.init(jax.random.key(0), x[:1], train=False))
  v1 = jax.eval_shape(lambda: with_head.init(jax.random.key(0), x[:1], train=False))
  assert jax.tree.structure(v0['params']) == jax.tree.structure(
      {k: v1['params'][k] for k in ('backbone', 'head')})
  aux = v1['params']['aux']
  assert [aux[f'fc{i}']['kernel'].shape for i in range(4)] == [(c, 16) for *_, c in RESNET_STAGES]
  assert aux['out']['kernel'].shape == (64, 1)
  _, outs = jax.eval_shape(lambda v: plain.apply(v, x, method=lambda m, x: m.backbone(
      x, train=False, stages=True)), v0)
  assert [o.shape[1:] for o in outs] == RESNET_STAGES
  feats, pred = jax.eval_shape(lambda v: with_head.apply(v, x, method='embed_aux'), v1)
  assert feats.shape == (6, 32) and pred.shape == (6,)


@pytest.mark.parametrize('name, width, stages', [
    ('small_cnn', 8, SMALL_CNN_STAGES),
    pytest.param('resnet18', 4, RESNET_STAGES, marks=pytest.mark.extended),
])
def test_backbones_expose_their_stages_and_the_head_predicts_one_loss_per_sample(name, width,
                                                                                  stages):
  cfg = tiny_config(**{'model.name': name, 'model.width': width}).model
  x = jax.random.normal(jax.random.key(1), (6, 16, 16, 3))
  plain = models.create_model(cfg, 10)
  with_head = train.with_aux_head(plain, ll.LossNet(hidden=16))
  init = jax.jit(lambda k: (plain.init(k, x[:1], train=False),
                            with_head.init(k, x[:1], train=False)))
  v0, v1 = init(jax.random.key(0))
  # The task model's parameters are the same with and without the head; the head adds 'aux'.
  assert set(v0['params']) == {'backbone', 'head'} and set(v1['params']) == {'backbone', 'head',
                                                                              'aux'}
  same = jax.tree.map(np.array_equal, v0['params'], {k: v1['params'][k] for k in v0['params']})
  assert all(jax.tree.leaves(same))
  assert set(v1['params']['aux']) == {f'fc{i}' for i in range(len(stages))} | {'out'}

  @jax.jit
  def forward(v0, v1):
    stage_out = plain.apply(v0, x, method=lambda m, x: m.backbone(x, train=False, stages=True))
    return (stage_out, plain.apply(v0, x, method='embed'), plain.apply(v0, x, train=False),
            with_head.apply(v1, x, method='embed_aux'), with_head.apply(v1, x, train=False))

  (pooled, outs), embedded, logits, (feats, pred), logits_with_head = forward(v0, v1)
  assert [o.shape[1:] for o in outs] == stages
  np.testing.assert_array_equal(pooled, embedded)
  assert pred.shape == (6,) and pred.dtype == jnp.float32
  np.testing.assert_array_equal(feats, embedded)
  np.testing.assert_array_equal(logits_with_head, logits)
  # The head by hand: GAP -> Dense -> ReLU per stage, concatenated -> Dense(1).
  a = v1['params']['aux']
  hidden = [np.maximum(np.asarray(o).mean((1, 2)) @ a[f'fc{i}']['kernel'] + a[f'fc{i}']['bias'],
                       0) for i, o in enumerate(outs)]
  by_hand = (np.concatenate(hidden, -1) @ a['out']['kernel'] + a['out']['bias'])[:, 0]
  np.testing.assert_allclose(pred, by_hand, rtol=1e-4, atol=1e-5)


# ---- the gradient detach -----------------------------------------------------------------------

def _setup(**overrides):
  cfg = tiny_config(strategy='learning_loss', num_devices=1, **overrides)
  config_checks.validate(cfg)
  aux = strategies.get('learning_loss').aux_head(cfg)
  return cfg, train.make_setup(cfg, MESHES[1], (16, 16, 3), 10, record=False, aux=aux)


def test_after_detach_after_the_loss_term_sends_no_gradient_into_the_backbone():
  cfg, setup = _setup(**{'train.epochs': 10, 'learning_loss.detach_after': 0.6})
  assert setup.aux.detach_epoch == 6 and setup.aux.weight == 1.0
  state = train.init_state(setup, jax.random.key(0))
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(8, 16, 16, 3)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 10, 8))
  mask = jnp.arange(8) < 7

  @jax.jit
  def aux_grads(params, detach):
    def term(p):
      (logits, out), _ = setup.model.apply(
          {'params': p, 'batch_stats': state.batch_stats}, x, mask=mask, detach=detach,
          mutable=['batch_stats'], method='train_with_aux')
      losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
      return setup.aux.loss(out, losses, mask)
    return jax.grad(term)(params)

  norms = {}
  for detach in (False, True):
    g = aux_grads(state.params, jnp.bool_(detach))
    norms[detach] = {k: sum(float(jnp.abs(l).sum()) for l in jax.tree.leaves(g[k])) for k in g}
  assert norms[False]['backbone'] > 0 and norms[False]['aux'] > 0
  assert norms[True]['backbone'] == 0.0 and norms[True]['head'] == 0.0
  assert norms[True]['aux'] == pytest.approx(norms[False]['aux'], rel=1e-6)  # it still learns
  # Through the training step, keyed on state.epoch: from epoch 6 on, the step with the loss term
  # (weight 1) moves the task model exactly as the step without it (weight 0); before, not.
  _, zero = _setup(**{'train.epochs': 10, 'learning_loss.weight': 0.0})
  images = rng.integers(0, 255, (64, 16, 16, 3)).astype(np.uint8)
  ds = types.SimpleNamespace(train_images=images, train_labels=rng.integers(0, 10, 64),
                             test_images=images[:8], test_labels=np.zeros(8, np.int64))
  device_data = input_pipeline.put_data(ds, MESHES[1])
  idx = jnp.arange(32) % 30
  step = {s: jax.jit(lambda st, s=s: train.train_step(s, st, device_data, idx, jnp.arange(32) < 30,
                                                      jax.random.key(3)))
          for s in (setup, zero)}
  for epoch, detached in ((5, False), (6, True), (9, True)):
    st = state.replace(epoch=jnp.int32(epoch))
    (a, sums), (b, _) = step[setup](st), step[zero](st)
    assert float(sums.aux['aux_loss']) > 0
    for part in ('backbone', 'head'):
      equal = all(jax.tree.leaves(jax.tree.map(np.array_equal, a.params[part], b.params[part])))
      assert equal == (detached or part == 'head'), (epoch, part)


def test_one_train_step_serves_models_with_and_without_the_head():
  """The head is an objective wrapped around the task loss, not a branch in the step: at
  weight 0 the step of the model with the head moves the task model as the plain model's step
  (same initial task parameters), and only it reports the head's loss."""
  cfg, with_head = _setup(**{'learning_loss.weight': 0.0})
  plain = train.make_setup(cfg, MESHES[1], (16, 16, 3), 10, record=False)
  assert plain.objective is train.TASK_LOSS and with_head.objective is with_head.aux
  rng = np.random.default_rng(1)
  images = rng.integers(0, 255, (40, 16, 16, 3)).astype(np.uint8)
  ds = types.SimpleNamespace(train_images=images, train_labels=rng.integers(0, 10, 40),
                             test_images=images[:8], test_labels=np.zeros(8, np.int64))
  device_data = input_pipeline.put_data(ds, MESHES[1])
  idx, mask = jnp.arange(32) % 40, jnp.arange(32) < 29
  out = {}
  for name, s in (('plain', plain), ('head', with_head)):
    state = train.init_state(s, jax.random.key(0))
    out[name] = jax.jit(lambda st, s=s: train.train_step(s, st, device_data, idx, mask,
                                                         jax.random.key(3)))(state)
  (p, p_sums), (h, h_sums) = out['plain'], out['head']
  assert set(h.params) == {'backbone', 'head', 'aux'} and set(p.params) == {'backbone', 'head'}
  for part in ('backbone', 'head'):
    for a, b in zip(jax.tree.leaves(p.params[part]), jax.tree.leaves(h.params[part])):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
  for a, b in zip(jax.tree.leaves(p.batch_stats), jax.tree.leaves(h.batch_stats)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(float(p_sums.loss), float(h_sums.loss), rtol=1e-6)
  assert float(p_sums.count) == float(h_sums.count) == 29.0
  assert p_sums.aux == {} and set(h_sums.aux) == {'aux_loss'} and float(h_sums.aux['aux_loss']) > 0


# ---- end to end ---------------------------------------------------------------------------------

FLAGS = ['--config.strategy=learning_loss']


@pytest.fixture(scope='module')
def straight(tmp_path_factory):
  """The demo CLI (tiny), 4 devices."""
  workdir = tmp_path_factory.mktemp('lloss')
  cli(workdir, *FLAGS)
  return workdir


def test_demo_cli_selects_budget_new_ids_per_round(straight):
  cfg = tiny_config(strategy='learning_loss')
  res = check_outputs(straight, cfg)  # budget new, distinct, previously unlabeled ids per round
  assert [len(r['selected']) for r in res['rounds']] == [cfg.al.budget] * cfg.al.rounds + [0]


def test_the_query_is_the_top_predicted_loss_and_four_devices_pick_the_same_ids():
  """Round 0 by hand on 1 device: the scores are the final model's predicted loss recomputed
  independently, the query its top ``budget``; the same trained model scored and selected on 4
  devices picks the same ids. (Training itself agrees across device counts only to float
  rounding, as for every strategy; a continuous score can then reorder near the boundary.)"""
  cfg = tiny_config(strategy='learning_loss', num_devices=1, **{'train.epochs': 3})
  exp = rounds.Experiment.create(cfg, data.load_dataset(cfg.dataset))
  assert exp.setup.aux is not None and exp.setup.aux.detach_epoch == 2
  state = exp.initial_state()
  ctx = rounds.begin_round(state, exp)
  assert 'aux' in ctx.train_state.params
  for _ in range(cfg.train.epochs):
    ctx, metrics = rounds.train_epoch(exp, ctx)
  assert np.isfinite(metrics.to_host()['aux_loss'])
  scored = rounds.score_pool(exp, ctx)
  chosen = rounds.select(exp, ctx, scored)
  # Recomputed independently: the eval-mode head on the normalised pool images.
  ids = ctx.pool_ids
  x = input_pipeline.normalize(exp.data.train_images[ids], exp.data.mean, exp.data.std)
  _, pred = jax.jit(lambda v, x: exp.setup.model.apply(v, x, method='embed_aux'))(
      train.variables(ctx.train_state), x)
  pred = np.asarray(pred)
  np.testing.assert_allclose(np.asarray(scored.scores)[:len(ids)], pred, rtol=1e-4, atol=1e-5)
  picked = np.asarray(chosen.positions)
  assert len(set(picked.tolist())) == cfg.al.budget
  assert pred[picked].min() >= np.sort(pred)[-cfg.al.budget] - 1e-5
  new = rounds.finish_round(state, exp, ctx, 0.0, chosen)
  assert set(new.selected(0).tolist()) == set(ids[picked].tolist())
  # The same model on 4 devices: the same scores (to rounding) and the same ids.
  exp4 = rounds.Experiment.create(tiny_config(strategy='learning_loss', num_devices=4,
                                               **{'train.epochs': 3}), exp.dataset)
  ctx4 = rounds.begin_round(state, exp4)
  ctx4 = ctx4.replace(train_state=jax.device_put(jax.device_get(ctx.train_state),
                                                 parallel.replicated(exp4.mesh)))
  scored4 = rounds.score_pool(exp4, ctx4)
  np.testing.assert_allclose(np.asarray(scored4.scores)[:len(ids)], pred, rtol=1e-4, atol=1e-5)
  new4 = rounds.finish_round(state, exp4, ctx4, 0.0, rounds.select(exp4, ctx4, scored4))
  assert new4.selected(0).tolist() == new.selected(0).tolist()


@pytest.mark.extended  # ~50 s; the mid-round resume of every strategy's state is covered by
# tests/test_reliability.py, this one adds the auxiliary head's parameters in the checkpoint
def test_sigkill_mid_round_then_rerun_gives_the_uninterrupted_ids(straight, tmp_path):
  proc = cli(tmp_path, *FLAGS, env={'JAXDISP_FAULT_KILL_AT': 'epoch@1:3'}, check=False)
  assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
  assert len(load_results(tmp_path)['rounds']) == 1  # round 0 done; round 1 killed after epoch 3
  resumed = cli(tmp_path, *FLAGS)
  assert 'round 1: resuming training at epoch 2' in resumed.stderr
  a, b = load_results(straight), load_results(tmp_path)
  assert [r['selected'] for r in a['rounds']] == [r['selected'] for r in b['rounds']]
  assert [r['test_accuracy'] for r in a['rounds']] == [r['test_accuracy'] for r in b['rounds']]


# ---- the config checks -------------------------------------------------------------------------

@pytest.mark.parametrize('key, value, message', [
    ('learning_loss.weight', -1.0, 'learning_loss.weight=-1.0 must be a finite number >= 0'),
    ('learning_loss.weight', float('nan'), 'learning_loss.weight=nan must be a finite number'),
    ('learning_loss.margin', -0.5, 'learning_loss.margin=-0.5 must be a finite number >= 0'),
    ('learning_loss.margin', float('inf'), 'learning_loss.margin=inf must be a finite number'),
    ('learning_loss.detach_after', 1.5, 'learning_loss.detach_after=1.5 must be in [0, 1]'),
    ('learning_loss.detach_after', -0.1, 'learning_loss.detach_after=-0.1 must be in [0, 1]'),
    ('learning_loss.hidden', 0, 'learning_loss.hidden=0 must be an integer >= 1'),
])
def test_bad_learning_loss_values_are_refused_with_one_line(key, value, message):
  cfg = tiny_config(strategy='learning_loss', **{key: value})
  with pytest.raises(ConfigError) as e:
    config_checks.validate(cfg)
  assert str(e.value).startswith(message) and '\n' not in str(e.value), str(e.value)
  config_checks.validate(tiny_config(strategy='random', **{key: value}))  # other strategies: unused


def test_cli_refuses_bad_learning_loss_values_with_one_line(tmp_path):
  proc = cli(tmp_path, *FLAGS, '--config.learning_loss.detach_after=2', check=False)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1] == (
      'error: learning_loss.detach_after=2.0 must be in [0, 1] (a fraction of train.epochs; '
      '1 = never detach)')
  proc = cli(tmp_path, *FLAGS, '--config.learning_loss.weight=big', check=False)  # not a number
  assert proc.returncode != 0 and not (tmp_path / 'results.json').exists()
  last = proc.stderr.strip().splitlines()[-1]
  assert 'learning_loss.weight' in last, proc.stderr[-2000:]


def test_registry_sweep_and_report_know_learning_loss():
  from jaxdisp import report, sweep  # pylint: disable=g-import-not-at-top
  assert 'learning_loss' in strategies.builtin_names()
  s = strategies.get('learning_loss')
  assert s.members(tiny_config()) == 1 and s.outputs == ('predicted_loss',)
  assert all(strategies.get(n).aux_head(tiny_config()) is None
             for n in strategies.builtin_names() if n != 'learning_loss')
  runs = sweep.plan(tiny_config, ['learning_loss', 'random'], [0],
                    [('learning_loss.margin', '0.5')])
  assert [(n, c.learning_loss.margin) for n, _, c in runs] == [('learning_loss', 0.5),
                                                                ('random', 0.5)]
  assert report.pool_passes('learning_loss', runs[0][2].to_dict()).startswith('1 training')
