"""Fair BALD: Monte-Carlo dropout through the whole network (model.dropout_layers='network')
against a plain per-sample loop and NumPy, on 1 and 4 devices; the models; the config checks."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from _helpers import tiny_config
from jaxdisp import config_checks, input_pipeline, models, parallel, strategies, train
from jaxdisp.data import Dataset
from jaxdisp.errors import ConfigError

N, CAPACITY, MC = 10, 16, 3


def network_cfg(**overrides):
  return tiny_config(strategy='bald', **{'model.dropout': 0.3, 'model.dropout_layers': 'network',
                                         'model.width': 4, 'dataset.image_size': 8,
                                         'dataset.num_classes': 3, 'bald.mc_samples': MC,
                                         'train.eval_batch_size': 8, 'train.batch_size': 8,
                                         **overrides})


def tiny_run(cfg, mesh):
  """(setup, state, device data): a model with random parameters and BatchNorm statistics far
  from the init's 0/1 (eval-mode BN must use them), made in NumPy (no RNG compile), and 24
  images."""
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, size=(24, 8, 8, 3), dtype=np.uint8)
  labels = rng.integers(0, 3, size=24).astype(np.int32)
  ds = Dataset('tiny', images, labels, images[:8], labels[:8], ('a', 'b', 'c'),
               tuple(map(str, range(24))))
  setup = train.make_setup(cfg, mesh, ds.image_shape, 3, record=False)
  shapes = jax.eval_shape(lambda: setup.model.init(jax.random.PRNGKey(0),
                                                   jnp.zeros((1, 8, 8, 3)), train=False))

  def fill(path, leaf):
    name = jax.tree_util.keystr(path)
    x = rng.normal(size=leaf.shape).astype(np.float32)
    if 'scale' in name or 'var' in name:
      return 1.0 + 0.3 * np.abs(x)
    if 'kernel' in name:  # unit-variance activations, logits of order 1
      return x / np.sqrt(np.prod(leaf.shape[:-1]))
    return 0.2 * x

  v = jax.tree_util.tree_map_with_path(fill, shapes)
  state = train.TrainState(epoch=np.int32(0), params=v['params'], batch_stats=v['batch_stats'],
                           opt_state=())
  return setup, parallel.put_replicated(state, mesh), input_pipeline.put_data(ds, mesh)


def pool_bald(setup, state, data, cfg, ids, key):
  idx, num = train.index_buffer(ids, CAPACITY, setup.mesh)
  out = jax.jit(lambda s, d, i, n, k: strategies.pool_outputs(
      setup, ml_collections.FrozenConfigDict(cfg), s, d, i, n, k, ('bald',)))(
          state, data, idx, num, key)
  return np.asarray(out['bald'])[:len(ids)]


def test_network_bald_matches_a_plain_per_sample_loop_and_numpy_on_1_and_4_devices():
  cfg = network_cfg()
  ids = np.array([3, 17, 0, 5, 9, 22, 11, 1, 14, 6])
  key = jax.random.PRNGKey(7)
  setup, state, data = tiny_run(cfg, parallel.make_mesh(4))
  got4 = pool_bald(setup, state, data, cfg, ids, key)
  got1 = pool_bald(*tiny_run(cfg, parallel.make_mesh(1)), cfg, ids, key)
  # Masks are keyed by (pass, dataset id), not by position: 1 and 4 devices (chunks of 8 and
  # 4 x 2 rows) agree up to the rounding of differently batched convolutions.
  np.testing.assert_allclose(got1, got4, rtol=1e-5, atol=1e-6)

  # Reference: each sample alone, each pass a full forward pass of the network in eval-mode
  # BatchNorm with every dropout layer on, masks keyed by fold_in(pass key, dataset id); then
  # the mutual information written plainly in NumPy.
  v = train.variables(state)
  one = jax.jit(lambda x, k: setup.model.apply(
      v, x[None], method=lambda m, x: m.head(m.backbone(x, train=False, stochastic=True),
                                             deterministic=False),
      rngs={'dropout': k})[0])
  inputs = train.model_inputs(setup, data, jnp.asarray(ids))
  probs = np.zeros((MC, len(ids), 3))
  for t, k in enumerate(jax.random.split(key, MC)):
    for i, sample in enumerate(ids):
      logits = np.asarray(one(inputs[i], jax.random.fold_in(k, sample)), np.float64)
      probs[t, i] = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
  h = lambda p: -(p * np.log(p)).sum(-1)
  want = h(probs.mean(0)) - h(probs).mean(0)
  np.testing.assert_allclose(got4, want, rtol=1e-4, atol=1e-6)
  assert np.all(probs.std(0).max(-1) > 1e-3)  # the passes do differ


@pytest.mark.parametrize('name', ['small_cnn', 'resnet18'])
def test_network_dropout_layers_and_head_only_models(name):
  """'network' puts dropout after every backbone stage but the last; 'head' none in the
  backbone (the same parameters either way: dropout has none)."""
  x = jax.ShapeDtypeStruct((2, 8, 8, 3), jnp.float32)
  made = {}
  for layers in ('head', 'network'):
    cfg = ml_collections.ConfigDict(dict(name=name, width=2, dtype='float32', dropout=0.5,
                                         dropout_layers=layers))
    model = models.create_model(cfg, 3)
    v = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False), x)
    calls = []

    def count(next_fun, args, kwargs, context):
      if isinstance(context.module, models.nn.Dropout) and context.method_name == '__call__':
        calls.append(context.module.scope.path)
      return next_fun(*args, **kwargs)

    with models.nn.intercept_methods(count):  # traced only (eval_shape): nothing compiled
      jax.eval_shape(lambda v, x: model.apply(v, x, train=False, stochastic=True,
                                              rngs={'dropout': jax.random.PRNGKey(1)}), v, x)
    made[layers] = (jax.tree.structure(v), len(calls))
  assert made['head'][0] == made['network'][0]
  assert made['head'][1] == 1  # the head's
  assert made['network'][1] == 1 + {'small_cnn': 2, 'resnet18': 3}[name]


@pytest.mark.parametrize('overrides, message', [
    ({'model.dropout_layers': 'all'}, "model.dropout_layers='all' must be 'head' or 'network'"),
    ({'model.dropout_layers': 'network', 'model.dropout': 0.0},
     "model.dropout_layers='network' needs model.dropout > 0"),
    ({'bald.mc_samples': 1}, 'bald.mc_samples=1 must be >= 2'),
])
def test_bad_dropout_values_are_refused_in_one_line(overrides, message):
  with pytest.raises(ConfigError, match=message):
    config_checks.validate(network_cfg(**overrides))
  config_checks.validate(network_cfg())
