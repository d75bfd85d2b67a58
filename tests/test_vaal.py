"""VAAL (strategy=vaal): the losses against the authors' formulation written out plainly, the
query direction, 1 = 4 devices, determinism and one compile per run, the NaN guard, the config
checks, and end-to-end runs (small CNN, ResNet18) with a SIGKILL during the VAAL step resumed to
the uninterrupted result. On feature vectors (``image_shape`` (D,)): the MLP VAE and its step
losses against a NumPy forward pass, no flips, and the scoring of a tiny vector pool.
"""

import signal
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _helpers import check_outputs, cli, load_results, tiny_config
from jaxdisp import compile_counter, config_checks, input_pipeline, parallel, selection, strategies
from jaxdisp import train
from jaxdisp.errors import ConfigError, NumericalError
from jaxdisp.strategies import vaal, vaal_model

# A VAE of 4, 8, 16 channels on the 16x16 test images; a few iterations.
TINY_VAAL = {'vaal.width': 4, 'vaal.epochs': 1.0, 'vaal.batch_size': 16}
MESHES = {d: parallel.make_mesh(d) for d in (1, 4)}


# ---- the authors' formulation, written out (sinhasam/vaal solver.py, sampler.py) ----------------

def np_sigmoid(z):
  return 1.0 / (1.0 + np.exp(-z))


def np_bce(logits, target):
  """torch.nn.BCELoss()(sigmoid(logits), target): the mean over the batch."""
  p = np_sigmoid(np.asarray(logits, np.float64))
  return float(-np.mean(target * np.log(p) + (1 - target) * np.log(1 - p)))


def np_vae(x, recon, mu, logvar, beta, reduction='sum'):
  """MSE (mean over elements) + beta * KLD, KLD summed over batch and latent dims."""
  x, recon, mu, logvar = (np.asarray(a, np.float64) for a in (x, recon, mu, logvar))
  kld = -0.5 * np.sum(1 + logvar - mu**2 - np.exp(logvar))
  if reduction == 'batch_mean':
    kld /= mu.shape[0]
  return float(np.mean((recon - x)**2) + beta * kld)


def vaal_setup(mesh, image_shape=(16, 16, 3), **overrides):
  cfg = tiny_config(strategy='vaal', **{**TINY_VAAL, **overrides})
  task = train.make_setup(cfg, mesh, image_shape, 10, record=False)
  return cfg, vaal.VaalSetup.from_config(cfg, task)


def test_losses_and_steps_match_the_authors_formulation():
  rng = np.random.default_rng(0)
  b, z = 6, 5
  mu, logvar = rng.normal(size=(b, z)), rng.normal(size=(b, z)) * 0.3
  x, recon = rng.normal(size=(b, 4, 4, 3)), rng.normal(size=(b, 4, 4, 3))
  d_l, d_u = rng.normal(size=b) * 2, rng.normal(size=b) * 2
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  for reduction in vaal.KL_REDUCTIONS:
    np.testing.assert_allclose(
        vaal.vae_loss(f32(x), f32(recon), f32(mu), f32(logvar), 0.7, reduction),
        np_vae(x, recon, mu, logvar, 0.7, reduction), rtol=1e-5)
  # VAE step: both sets target 1 (the adversarial target); D step: labeled 1, unlabeled 0.
  np.testing.assert_allclose(vaal.adversarial_loss(f32(d_l), f32(d_u)),
                             np_bce(d_l, 1) + np_bce(d_u, 1), rtol=1e-5)
  np.testing.assert_allclose(vaal.discriminator_loss(f32(d_l), f32(d_u)),
                             np_bce(d_l, 1) + np_bce(d_u, 0), rtol=1e-5)
  assert abs(float(vaal.adversarial_loss(f32(d_l), f32(d_u)))
             - (np_bce(d_l, 1) + np_bce(d_u, 0))) > 1e-2  # the known-wrong target 0 differs
  # Query: the lowest D(mu) first (the sampler's topk of -preds).
  d = np.array([0.3, -2.0, 5.0, -0.1, 1.0], np.float32)
  pos, _ = selection.select_top(vaal.query_scores(jnp.asarray(d)), jnp.zeros(5), jnp.int32(5), 2)
  assert np.asarray(pos).tolist() == [1, 3]

  # The steps on a tiny batch, against the same formulas on the model's own outputs.
  _, vs = vaal_setup(MESHES[1], **{'vaal.beta': 0.5, 'vaal.adversary_weight': 2.0})
  st = vaal.init_state(vs, jax.random.key(0))
  x_l = f32(rng.normal(size=(8, 16, 16, 3)))
  x_u = f32(rng.normal(size=(8, 16, 16, 3)))
  key = jax.random.key(3)
  after_vae, loss = jax.jit(lambda s: vaal.vae_step(vs, s, x_l, x_u, key))(st)
  after_d, d_loss = jax.jit(lambda s: vaal.discriminator_step(vs, s, x_l, x_u))(after_vae)

  @jax.jit
  def outputs(st, after_vae):  # what the steps should have computed, step by step
    k_l, k_u = jax.random.split(key)
    v = {'params': st.vae_params, 'batch_stats': st.vae_stats}
    (r_l, _, mu_l, lv_l), upd = vs.vae.apply(v, x_l, k_l, True, mutable=['batch_stats'])
    (r_u, _, mu_u, lv_u), _ = vs.vae.apply({**v, **upd}, x_u, k_u, True,
                                           mutable=['batch_stats'])
    disc = lambda p, m: vs.discriminator.apply({'params': p}, m)
    v2 = {'params': after_vae.vae_params, 'batch_stats': after_vae.vae_stats}
    (m_l, _), upd = vs.vae.apply(v2, x_l, True, method='encode', mutable=['batch_stats'])
    (m_u, _), _ = vs.vae.apply({**v2, **upd}, x_u, True, method='encode', mutable=['batch_stats'])
    return (r_l, mu_l, lv_l, r_u, mu_u, lv_u, disc(st.d_params, mu_l), disc(st.d_params, mu_u),
            disc(after_vae.d_params, m_l), disc(after_vae.d_params, m_u))

  r_l, mu_l, lv_l, r_u, mu_u, lv_u, dl, du, dl2, du2 = map(np.asarray, outputs(st, after_vae))
  expected = (np_vae(x_l, r_l, mu_l, lv_l, 0.5) + np_vae(x_u, r_u, mu_u, lv_u, 0.5)
              + 2.0 * (np_bce(dl, 1) + np_bce(du, 1)))
  np.testing.assert_allclose(float(loss), expected, rtol=1e-4)
  np.testing.assert_allclose(float(d_loss), np_bce(dl2, 1) + np_bce(du2, 0), rtol=1e-4)
  same = lambda a, b: all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a),
                                                              jax.tree.leaves(b)))
  assert same(after_vae.d_params, st.d_params)  # the VAE step leaves D alone ...
  assert not same(after_vae.vae_params, st.vae_params)
  assert same(after_d.vae_params, after_vae.vae_params)  # ... and the D step the VAE
  assert not same(after_d.d_params, after_vae.d_params)


def pool_view(cfg, mesh, seed=0):
  """A round's view without a task model: 240 random 16x16 images, 40 labeled, 200 in the pool."""
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 255, (240, 16, 16, 3)).astype(np.uint8)
  ds = types.SimpleNamespace(train_images=images, train_labels=rng.integers(0, 10, 240),
                             test_images=images[:8], test_labels=np.zeros(8, np.int64))
  setup = train.make_setup(cfg, mesh, images.shape[1:], 10, record=False)
  pool, n_pool = train.index_buffer(np.arange(40, 240), train.pool_capacity(setup, 200), mesh)
  labeled, n_labeled = train.index_buffer(np.arange(40), 64, mesh)
  return strategies.PoolView(cfg, mesh, 10, jnp.zeros((0, pool.shape[0]), jnp.int8), {}, n_pool,
                             {}, n_labeled, jax.random.key(7),
                             data=input_pipeline.put_data(ds, mesh), setup=setup, pool=pool,
                             labeled=labeled)


@pytest.mark.parametrize('shape', [(3, 3, 5, 7), (2, 4, 4, 16)])
def test_sub_pixel_transposed_convolution_is_flaxs_transposed_convolution(shape):
  """The decoder's k4 s2 'SAME' transposed convolution, computed as four 2x2 convolutions
  (fast gradients on XLA:CPU), against ``nn.ConvTranspose`` with the same kernel: values and
  gradients (kernel and input), on odd and even sides."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  from jaxdisp.strategies import vaal_model  # pylint: disable=g-import-not-at-top
  k_x, k_w = jax.random.split(jax.random.PRNGKey(3))
  x = jax.random.normal(k_x, shape)
  ours = vaal_model.ConvTranspose4x4Stride2(6)
  flax_t = nn.ConvTranspose(6, (4, 4), (2, 2), padding='SAME', use_bias=False)
  v = ours.init(k_w, x)
  assert jax.tree.map(jnp.shape, v) == jax.tree.map(jnp.shape, flax_t.init(k_w, x))
  loss = lambda m: lambda p, x: jnp.sum(jnp.sin(m.apply(p, x)))
  np.testing.assert_allclose(ours.apply(v, x), flax_t.apply(v, x), atol=1e-5, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(jax.grad(loss(ours), argnums=(0, 1))(v, x)),
                  jax.tree.leaves(jax.grad(loss(flax_t), argnums=(0, 1))(v, x))):
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-5)
  # the decoder keeps the parameter names and shapes of the nn.ConvTranspose layers it replaced
  dec = vaal_model.Decoder((32, 32, 3), 4, 4)
  shapes = jax.eval_shape(lambda k: dec.init(k, jnp.zeros((2, 8)), True), k_w)['params']
  assert sorted(shapes) == ['BatchNorm_0', 'BatchNorm_1', 'BatchNorm_2', 'ConvTranspose_0',
                            'ConvTranspose_1', 'ConvTranspose_2', 'ConvTranspose_3', 'Dense_0']
  assert shapes['ConvTranspose_0']['kernel'].shape == (4, 4, 32, 16)
  assert shapes['ConvTranspose_3']['kernel'].shape == (1, 1, 4, 3)


def test_same_ids_on_one_and_four_devices_lowest_d_deterministic_one_compile():
  compile_counter.enable()
  cfg = tiny_config(strategy='vaal', **TINY_VAAL)
  budget, got = 20, {}
  for d in (4, 1):
    view = pool_view(cfg, MESHES[d])
    scores = vaal.score(view)
    pos, _ = selection.select_top(scores, jnp.zeros(scores.shape), view.num_pool, budget)
    got[d] = (np.asarray(pos), np.asarray(scores)[:200])
  np.testing.assert_array_equal(got[1][0], got[4][0])
  np.testing.assert_allclose(got[1][1], got[4][1], rtol=1e-3, atol=1e-3)
  # Trained again from the same key: the same scores bit for bit, nothing compiled again.
  before = compile_counter.compile_counts()
  np.testing.assert_array_equal(np.asarray(vaal.score(view))[:200], got[1][1])
  assert compile_counter.compile_counts() == before
  # The query is the lowest D(mu) of the trained VAE and D, in eval mode, written out plainly.
  vs = vaal.VaalSetup.from_config(cfg, view.setup)
  st, n = vaal.train_vaal(vs, view.data, view.labeled, view.num_labeled, view.pool,
                          view.num_pool, jax.random.fold_in(view.key, 0x7AA1))
  assert n == (40 + 200) // 16
  x = input_pipeline.normalize(view.data.train_images[40:240], view.data.mean, view.data.std)
  mu, _ = vs.vae.apply({'params': st.vae_params, 'batch_stats': st.vae_stats}, x, False,
                       method='encode')
  d_mu = np.asarray(vs.discriminator.apply({'params': st.d_params}, mu))
  np.testing.assert_allclose(-d_mu, got[1][1], rtol=1e-4, atol=1e-4)
  assert set(got[1][0].tolist()) == set(np.argsort(d_mu)[:budget].tolist())


@pytest.mark.extended
def test_device_step_loop_selects_as_the_host_loop():
  """TPU/GPU run a round's iterations as one compiled loop (train.step_loop=device): the same
  training as one call per iteration (forced here on CPU)."""
  scores = {}
  for loop in ('host', 'device'):
    cfg = tiny_config(strategy='vaal', **{**TINY_VAAL, 'train.step_loop': loop})
    view = pool_view(cfg, MESHES[1])
    scores[loop] = np.asarray(vaal.score(view))[:200]
  np.testing.assert_allclose(scores['device'], scores['host'], rtol=1e-4, atol=1e-4)
  assert (np.argsort(-scores['device'], kind='stable')[:20].tolist()
          == np.argsort(-scores['host'], kind='stable')[:20].tolist())


def test_nonfinite_vaal_loss_is_one_line_numerical_error():
  cfg = tiny_config(strategy='vaal', **{**TINY_VAAL, 'vaal.epochs': 0.2})
  cfg.vaal.learning_rate = 1e30  # past check_config: the VAE blows up at once
  with pytest.raises(NumericalError, match=r'^strategy=vaal: the VAE/discriminator loss is '
                     r'NaN/inf at iteration \d+ of 3; refusing to select') as e:
    vaal.score(pool_view(cfg, MESHES[1]))
  assert '\n' not in str(e.value)


@pytest.mark.parametrize('key,value,message', [
    ('vaal.latent_dim', 0, 'vaal.latent_dim=0 must be positive'),
    ('vaal.width', -4, 'vaal.width=-4 must be positive'),
    ('vaal.beta', -1.0, 'vaal.beta=-1.0 must be a finite number >= 0'),
    ('vaal.beta', float('nan'), 'vaal.beta=nan must be a finite number >= 0'),
    ('vaal.adversary_weight', -0.5, 'vaal.adversary_weight=-0.5 must be a finite number >= 0'),
    ('vaal.epochs', 0.0, 'vaal.epochs=0.0 must be a finite number > 0'),
    ('vaal.batch_size', 0, 'vaal.batch_size=0 must be positive'),
    ('vaal.batch_size', 6, 'vaal.batch_size=6 must be a multiple of num_devices=4'),
    ('vaal.learning_rate', 0.0, 'vaal.learning_rate=0.0 must be a finite number > 0'),
    ('vaal.kl_reduction', 'mean', "vaal.kl_reduction='mean' must be 'sum' or 'batch_mean'"),
])
def test_bad_vaal_values_are_refused_with_one_line(key, value, message):
  cfg = tiny_config(strategy='vaal', num_devices=4, **{key: value})
  with pytest.raises(ConfigError) as e:
    config_checks.validate(cfg)
  assert str(e.value).startswith(message) and '\n' not in str(e.value)
  config_checks.validate(tiny_config(strategy='random', **{key: value}))  # other strategies: unused


def test_cli_refuses_a_bad_vaal_value_with_one_line(tmp_path):
  proc = cli(tmp_path, '--config.strategy=vaal', '--config.vaal.beta=-1', check=False)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1] == ('error: vaal.beta=-1.0 must be a finite '
                                                  'number >= 0')


def test_sweep_and_report_read_vaal_from_the_registry():
  from jaxdisp import report, sweep  # pylint: disable=g-import-not-at-top
  runs = sweep.plan(tiny_config, ['vaal', 'random'], [0], [('vaal.width', '4')])
  assert [(s, c.vaal.width) for s, _, c in runs] == [('vaal', 4), ('random', 4)]
  with pytest.raises(ConfigError, match=r'^vaal-seed0: vaal.epochs=-1.0 must be'):
    sweep.plan(tiny_config, ['vaal'], [0], [('vaal.epochs', '-1')])
  cfg = runs[0][2]
  cost = report.pool_passes('vaal', cfg.to_dict())
  assert cost.startswith(f'VAE + D from scratch: {cfg.vaal.epochs} x (L + P) / '
                         f'{cfg.vaal.batch_size} iterations'), cost
  assert 'vaal' in strategies.builtin_names()


# ---- end to end -------------------------------------------------------------------------------

CLI_VAAL = ['--config.strategy=vaal'] + [f'--config.{k}={v}' for k, v in TINY_VAAL.items()]


@pytest.fixture(scope='module')
def straight(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('vaal')
  cli(workdir, *CLI_VAAL)
  return workdir


def test_demo_cli_selects_budget_new_ids_per_round_small_cnn(straight):
  cfg = tiny_config(strategy='vaal', **TINY_VAAL)
  res = check_outputs(straight, cfg)  # budget new, distinct, unlabeled ids per round
  assert all(r['seconds']['score'] > 0 for r in res['rounds'][:-1])


@pytest.mark.extended
def test_sigkill_after_the_vaal_step_then_rerun_gives_the_uninterrupted_ids(straight, tmp_path):
  """Killed once round 1's VAE and D are trained and its pool scored (nothing of it saved):
  the rerun resumes round 1 from its epoch-4 checkpoint, trains them again, same ids."""
  proc = cli(tmp_path, *CLI_VAAL, env={'JAXDISP_FAULT_KILL_AT': 'scored@1'}, check=False)
  assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
  assert len(load_results(tmp_path)['rounds']) == 1  # round 0 done, round 1 was not
  resumed = cli(tmp_path, *CLI_VAAL)
  assert 'round 1: resuming training at epoch 4' in resumed.stderr
  a, b = load_results(straight), load_results(tmp_path)
  assert [r['selected'] for r in a['rounds']] == [r['selected'] for r in b['rounds']]
  assert [r['test_accuracy'] for r in a['rounds']] == [r['test_accuracy'] for r in b['rounds']]


@pytest.mark.extended
def test_demo_cli_resnet18(tmp_path):
  """One query with the paper's network (1 device, no diagnostics pass: compile time)."""
  cli(tmp_path, *CLI_VAAL, '--config.model.name=resnet18', '--config.al.rounds=1',
      '--config.train.epochs=2', '--config.num_devices=1', '--config.log.pool_diagnostics=False')
  res = load_results(tmp_path)
  assert [len(r['selected']) for r in res['rounds']] == [50, 0]


# ---- feature vectors (dataset.source=embeddings): the MLP VAE -----------------------------------

VECTOR_DIM = 8
VECTOR_TASK = {'model.name': 'linear', 'train.augment': False}  # a task model for vectors


def np_batch_norm(h, p, stats, train_mode, eps=1e-5):
  """flax BatchNorm: batch statistics (biased variance) in train mode, running ones in eval."""
  m, v = (h.mean(0), h.var(0)) if train_mode else (stats['mean'], stats['var'])
  return (h - m) / np.sqrt(v + eps) * p['scale'] + p['bias'], m, v


def np_blocks(h, params, stats, train_mode):
  """``vaal_model.VECTOR_LAYERS`` x (Dense without bias + BN + ReLU); each BN's batch stats."""
  batch = []
  for i in range(vaal_model.VECTOR_LAYERS):
    h = h @ params[f'Dense_{i}']['kernel']
    h, m, v = np_batch_norm(h, params[f'BatchNorm_{i}'], stats[f'BatchNorm_{i}'], train_mode)
    h = np.maximum(h, 0.0)
    batch.append((m, v))
  return h, batch


def np_mlp_vae(variables, x, noise, train_mode):
  """The MLP VAE written out: (recon, z, mu, logvar, encoder BN batch stats)."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), variables['params'])
  s = jax.tree.map(lambda a: np.asarray(a, np.float64), variables['batch_stats'])
  dense = lambda h, q: h @ q['kernel'] + q['bias']
  h, enc_batch = np_blocks(np.asarray(x, np.float64), p['encoder'], s['encoder'], train_mode)
  mu, logvar = dense(h, p['encoder']['mu']), dense(h, p['encoder']['logvar'])
  z = mu + np.exp(0.5 * logvar) * np.asarray(noise, np.float64)
  h, _ = np_blocks(z, p['decoder'], s['decoder'], train_mode)
  return dense(h, p['decoder']['out']), z, mu, logvar, enc_batch


def np_discriminator(params, mu):
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  h = np.asarray(mu, np.float64)
  for i in range(2):
    h = np.maximum(h @ p[f'Dense_{i}']['kernel'] + p[f'Dense_{i}']['bias'], 0.0)
  return (h @ p['Dense_2']['kernel'] + p['Dense_2']['bias'])[:, 0]


def perturbed(tree, key, scale=0.3):
  """Every leaf plus noise (non-zero biases and BN shifts, scales off 1); variances stay > 0."""
  leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
  keys = jax.random.split(key, len(leaves))
  out = []
  for (path, leaf), k in zip(leaves, keys):
    noise = scale * jax.random.normal(k, leaf.shape, leaf.dtype)
    name = str(getattr(path[-1], 'key', path[-1]))
    out.append(leaf + jnp.abs(noise) if name == 'var' else leaf + noise)
  return jax.tree_util.tree_unflatten(treedef, out)


def test_vector_vae_shapes_and_losses_match_a_numpy_forward_pass():
  """For ``image_shape`` (D,) the VAE is an MLP: D -> 4w -> 4w -> (mu, logvar), z -> 4w -> 4w ->
  D; its outputs (train and eval mode), the BN running averages, the VAE step's loss (MSE + beta
  KL + lambda adversarial) and the D step's loss against the same network in NumPy."""
  latent, width = 5, 4
  _, vs = vaal_setup(MESHES[1], (VECTOR_DIM,), **VECTOR_TASK, **{
      'vaal.latent_dim': latent, 'vaal.beta': 0.5, 'vaal.adversary_weight': 2.0,
      'vaal.width': width})
  hidden = vaal_model.vector_hidden(width)
  assert hidden == 16 and vaal_model.is_vector(vs.task.image_shape)
  st = vaal.init_state(vs, jax.random.key(0))
  shapes = jax.tree.map(jnp.shape, st.vae_params)
  assert shapes == {
      'encoder': {'Dense_0': {'kernel': (VECTOR_DIM, hidden)}, 'BatchNorm_0': {
          'scale': (hidden,), 'bias': (hidden,)}, 'Dense_1': {'kernel': (hidden, hidden)},
                  'BatchNorm_1': {'scale': (hidden,), 'bias': (hidden,)},
                  'mu': {'kernel': (hidden, latent), 'bias': (latent,)},
                  'logvar': {'kernel': (hidden, latent), 'bias': (latent,)}},
      'decoder': {'Dense_0': {'kernel': (latent, hidden)}, 'BatchNorm_0': {
          'scale': (hidden,), 'bias': (hidden,)}, 'Dense_1': {'kernel': (hidden, hidden)},
                  'BatchNorm_1': {'scale': (hidden,), 'bias': (hidden,)},
                  'out': {'kernel': (hidden, VECTOR_DIM), 'bias': (VECTOR_DIM,)}}}, shapes
  assert jax.tree.map(jnp.shape, st.d_params)['Dense_0']['kernel'] == (latent, 512)
  # Kaiming normal over the fan-in, zero biases, BN at identity (kaiming_fill, as for images).
  assert float(jnp.abs(st.vae_params['decoder']['out']['bias']).max()) == 0.0
  assert float(jnp.abs(st.vae_stats['encoder']['BatchNorm_0']['var'] - 1).max()) == 0.0

  k1, k2, k3 = jax.random.split(jax.random.key(1), 3)
  st = st.replace(vae_params=perturbed(st.vae_params, k1), vae_stats=perturbed(st.vae_stats, k2),
                  d_params=perturbed(st.d_params, k3, 0.05))
  v = {'params': st.vae_params, 'batch_stats': st.vae_stats}
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(6, VECTOR_DIM)), jnp.float32)
  key = jax.random.key(3)
  noise = jax.random.normal(key, (6, latent), jnp.float32)
  (recon, z, mu, logvar), upd = vs.vae.apply(v, x, key, True, mutable=['batch_stats'])
  assert recon.shape == x.shape and z.shape == mu.shape == logvar.shape == (6, latent)
  want = np_mlp_vae(v, x, noise, True)
  for got, expected in zip((recon, z, mu, logvar), want):
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-4, atol=1e-5)
  m, var = want[4][0]  # running averages: momentum 0.9 towards the batch's (biased) statistics
  old = st.vae_stats['encoder']['BatchNorm_0']
  np.testing.assert_allclose(upd['batch_stats']['encoder']['BatchNorm_0']['mean'],
                             0.9 * np.asarray(old['mean']) + 0.1 * m, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(upd['batch_stats']['encoder']['BatchNorm_0']['var'],
                             0.9 * np.asarray(old['var']) + 0.1 * var, rtol=1e-4, atol=1e-5)
  mu_eval, lv_eval = vs.vae.apply(v, x, False, method='encode')  # eval: running averages
  _, _, mu_np, lv_np, _ = np_mlp_vae(v, x, noise, False)
  np.testing.assert_allclose(np.asarray(mu_eval), mu_np, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(np.asarray(lv_eval), lv_np, rtol=1e-4, atol=1e-5)
  # The loss terms on vectors: MSE over every element + beta KL (both reductions).
  r64, mu64, lv64 = (np.asarray(a, np.float64) for a in want[:1] + want[2:4])
  x64 = np.asarray(x, np.float64)
  kl = -0.5 * np.sum(1 + lv64 - mu64**2 - np.exp(lv64))
  for reduction, kl_term in (('sum', kl), ('batch_mean', kl / 6)):
    np.testing.assert_allclose(vaal.vae_loss(x, recon, mu, logvar, 0.7, reduction),
                               np.mean((r64 - x64)**2) + 0.7 * kl_term, rtol=1e-4)

  # The steps: the VAE step's loss and the D step's loss, as the image test, in NumPy.
  x_l = jnp.asarray(rng.normal(size=(8, VECTOR_DIM)), jnp.float32)
  x_u = jnp.asarray(rng.normal(size=(8, VECTOR_DIM)) * 2 + 1, jnp.float32)
  after_vae, loss = jax.jit(lambda s: vaal.vae_step(vs, s, x_l, x_u, key))(st)
  after_d, d_loss = jax.jit(lambda s: vaal.discriminator_step(vs, s, x_l, x_u))(after_vae)
  k_l, k_u = jax.random.split(key)
  r_l, _, mu_l, lv_l, _ = np_mlp_vae(v, x_l, jax.random.normal(k_l, (8, latent)), True)
  r_u, _, mu_u, lv_u, _ = np_mlp_vae(v, x_u, jax.random.normal(k_u, (8, latent)), True)
  expected = (np_vae(x_l, r_l, mu_l, lv_l, 0.5) + np_vae(x_u, r_u, mu_u, lv_u, 0.5)
              + 2.0 * (np_bce(np_discriminator(st.d_params, mu_l), 1)
                       + np_bce(np_discriminator(st.d_params, mu_u), 1)))
  np.testing.assert_allclose(float(loss), expected, rtol=1e-4)
  v2 = {'params': after_vae.vae_params, 'batch_stats': after_vae.vae_stats}
  _, _, m_l, _, _ = np_mlp_vae(v2, x_l, np.zeros((8, latent)), True)  # train-mode BN, no grad
  _, _, m_u, _, _ = np_mlp_vae(v2, x_u, np.zeros((8, latent)), True)
  np.testing.assert_allclose(float(d_loss),
                             np_bce(np_discriminator(after_vae.d_params, m_l), 1)
                             + np_bce(np_discriminator(after_vae.d_params, m_u), 0), rtol=1e-4)
  same = lambda a, b: all(np.array_equal(p, q) for p, q in zip(jax.tree.leaves(a),
                                                              jax.tree.leaves(b)))
  assert same(after_vae.d_params, st.d_params) and not same(after_vae.vae_params, st.vae_params)
  assert same(after_d.vae_params, after_vae.vae_params)
  assert not same(after_d.d_params, after_vae.d_params)


def vector_view(cfg, mesh, n=200, dim=VECTOR_DIM, num_labeled=40, seed=0):
  """A round's view over hand-made feature vectors (float32 [n, dim], off-centre and unevenly
  scaled per dimension), put on the devices directly (no input pipeline): the first
  ``num_labeled`` labeled, the rest the pool. Returns (view, the host vectors, mean, std)."""
  rng = np.random.default_rng(seed)
  x = (rng.normal(size=(n, dim)) * rng.uniform(0.5, 3.0, dim) + rng.normal(size=dim) * 4)
  x = x.astype(np.float32)
  mean, std = x.mean(0), x.std(0)
  data = input_pipeline.DeviceData(**parallel.put_replicated(dict(
      train_images=x, train_labels=rng.integers(0, 10, n).astype(np.int32),
      test_images=x[:8], test_labels=np.zeros(8, np.int32), mean=mean, std=std), mesh))
  setup = train.make_setup(cfg, mesh, (dim,), 10, record=False)
  pool, n_pool = train.index_buffer(np.arange(num_labeled, n),
                                    train.pool_capacity(setup, n - num_labeled), mesh)
  labeled, n_labeled = train.index_buffer(np.arange(num_labeled), 64, mesh)
  view = strategies.PoolView(cfg, mesh, 10, jnp.zeros((0, pool.shape[0]), jnp.int8), {},
                             n_pool, {}, n_labeled, jax.random.key(7), data=data, setup=setup,
                             pool=pool, labeled=labeled)
  return view, x, mean, std


def test_vector_batches_are_the_standardised_rows_never_flipped():
  """A drawn batch is exactly ``(x[ids] - mean) / std`` of ids drawn with replacement: the task
  model's inputs without the /255 of images and without the image path's flips."""
  cfg = tiny_config(strategy='vaal', **TINY_VAAL, **VECTOR_TASK)
  view, x, mean, std = vector_view(cfg, MESHES[1])
  vs = vaal.VaalSetup.from_config(cfg, view.setup)
  key = jax.random.key(11)
  got = np.asarray(jax.jit(lambda d, b, n: vaal.draw_batch(vs, d, b, n, key))(
      view.data, view.pool, view.num_pool))
  assert got.shape == (vs.batch_size, VECTOR_DIM) and got.dtype == np.float32
  k_pos, _ = jax.random.split(key)
  pos = np.asarray(jax.random.randint(k_pos, (vs.batch_size,), 0, int(view.num_pool)))
  ids = np.asarray(view.pool)[pos]
  np.testing.assert_allclose(got, (x[ids] - mean) / std, rtol=1e-6, atol=1e-6)


def test_vector_scores_finite_pool_length_lowest_d_and_same_ids_on_one_and_four_devices():
  """VAAL's score function on a tiny vector problem (200 x 8, 40 labeled): finite scores of the
  pool's length, ``-D(mu)`` of the trained MLP VAE on the standardised vectors written plainly,
  the same ids on 1 and 4 devices, the same scores when trained again."""
  cfg = tiny_config(strategy='vaal', **TINY_VAAL, **VECTOR_TASK)
  budget, got = 20, {}
  for d in (4, 1):
    view, x, mean, std = vector_view(cfg, MESHES[d])
    scores = vaal.score(view)
    assert scores.shape == view.pool.shape and int(view.num_pool) == 160
    assert np.isfinite(np.asarray(scores)[:160]).all()
    pos, _ = selection.select_top(scores, jnp.zeros(scores.shape), view.num_pool, budget)
    got[d] = (np.asarray(pos), np.asarray(scores)[:160])
  np.testing.assert_array_equal(got[1][0], got[4][0])
  np.testing.assert_allclose(got[1][1], got[4][1], rtol=1e-3, atol=1e-3)
  np.testing.assert_array_equal(np.asarray(vaal.score(view))[:160], got[1][1])
  vs = vaal.VaalSetup.from_config(cfg, view.setup)
  st, n = vaal.train_vaal(vs, view.data, view.labeled, view.num_labeled, view.pool,
                          view.num_pool, jax.random.fold_in(view.key, 0x7AA1))
  assert n == (40 + 160) // 16
  mu, _ = vs.vae.apply({'params': st.vae_params, 'batch_stats': st.vae_stats},
                       jnp.asarray((x[40:] - mean) / std), False, method='encode')
  d_mu = np.asarray(vs.discriminator.apply({'params': st.d_params}, mu))
  np.testing.assert_allclose(-d_mu, got[1][1], rtol=1e-4, atol=1e-4)
  assert set(got[1][0].tolist()) == set(np.argsort(d_mu)[:budget].tolist())


def test_vector_vaal_end_to_end_on_an_embeddings_npz(tmp_path):
  """The CLI on a tiny ``.npz`` of feature vectors (``dataset.source=embeddings``, linear
  head): budget new ids per round."""
  rng = np.random.default_rng(0)
  y_train, y_test = rng.integers(0, 10, 600), rng.integers(0, 10, 200)
  centres = rng.normal(size=(10, 16)) * 2
  npz = tmp_path / 'features.npz'
  np.savez(npz, x_train=(centres[y_train] + rng.normal(size=(600, 16))).astype(np.float32),
           y_train=y_train, x_test=(centres[y_test] + rng.normal(size=(200, 16))).astype(
               np.float32), y_test=y_test)
  cfg = tiny_config(strategy='vaal', **TINY_VAAL, **VECTOR_TASK, **{
      'dataset.source': 'embeddings', 'dataset.root': str(npz)})
  workdir = tmp_path / 'run'
  cli(workdir, *CLI_VAAL, '--config.dataset.source=embeddings', f'--config.dataset.root={npz}',
      '--config.model.name=linear', '--config.train.augment=False')
  check_outputs(workdir, cfg)
