"""The data-parallel trainer: 1 device == 4 devices, bounded compilation, schedule, masking."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdisp import compile_counter, config_lib, input_pipeline, models, parallel, train


def small_config(**train_overrides):
  cfg = config_lib.base_config()
  cfg.model.name, cfg.model.width = 'small_cnn', 8
  cfg.train.batch_size, cfg.train.epochs, cfg.train.eval_batch_size = 64, 4, 128
  cfg.train.update(train_overrides)
  return cfg


def fake_dataset(n=1600, size=16, classes=10, seed=0):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, classes, n)
  # A weak class signal so training does something non-trivial.
  images = rng.integers(0, 200, (n, size, size, 3)).astype(np.uint8)
  images[np.arange(n), labels % size, :, labels % 3] = 255
  return types.SimpleNamespace(train_images=images, train_labels=labels,
                               test_images=images[:300], test_labels=labels[:300])


def build(cfg, num_devices, ds, mesh=None):
  """(setup, compiled steps, device data) as an experiment builds them."""
  mesh = mesh or parallel.make_mesh(num_devices)
  setup = train.make_setup(cfg, mesh, ds.train_images.shape[1:], 10, record=True)
  return setup, train.compile_steps(setup), input_pipeline.put_data(ds, mesh, setup.shard_train)


def buffers(setup, labeled_ids, pool_ids):
  labeled = train.index_buffer(labeled_ids, train.labeled_capacity(len(labeled_ids), 64),
                               setup.mesh)
  pool = train.index_buffer(pool_ids, train.pool_capacity(setup, len(pool_ids)), setup.mesh)
  return labeled, pool


def run_epochs(num_devices, epochs=1, num_labeled=300, step_loop='auto'):
  cfg = small_config(step_loop=step_loop)
  ds = fake_dataset()
  setup, steps, data = build(cfg, num_devices, ds)
  (labeled, nl), (pool, npool) = buffers(setup, np.arange(num_labeled),
                                         np.arange(num_labeled, 1000))
  state, history = steps.init(jax.random.key(0)), steps.empty_history(pool.shape[0])
  stats = steps.empty_stats(pool.shape[0])
  for _ in range(epochs):
    state, history, stats, metrics = steps.train_epoch(state, history, stats, data, labeled, nl,
                                                       pool, npool, jax.random.key(1))
  return state, history, metrics.to_host(), steps.evaluate(state, data)['accuracy']


def test_one_device_equals_four_devices():
  assert jax.device_count() == 4
  s1, h1, m1, a1 = run_epochs(1)
  s4, h4, m4, a4 = run_epochs(4)
  assert h4.sharding.spec == jax.P(None, 'data')  # the history is split over the pool axis
  for x, y in zip(jax.tree.leaves((s1.params, s1.batch_stats, s1.opt_state)),
                  jax.tree.leaves((s4.params, s4.batch_stats, s4.opt_state))):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(float(m1['loss']), float(m4['loss']), rtol=1e-5)
  assert int(m1['steps']) == int(m4['steps']) == 5  # ceil(300 / 64)
  # The recorded predictions agree wherever the two models are not on a knife edge.
  r1, r4 = np.asarray(h1[0]), np.asarray(h4[0])
  assert (r1 == r4).mean() > 0.99 and (r1[700:] == -1).all()
  assert abs(float(a1) - float(a4)) <= 0.01


@pytest.mark.extended
def test_host_step_loop_equals_device_step_loop():
  """The CPU default (steps dispatched from Python) computes the same epoch as one fused call."""
  sh, hh, mh, _ = run_epochs(4, epochs=2, step_loop='host')
  sd, hd, md, _ = run_epochs(4, epochs=2, step_loop='device')
  for x, y in zip(jax.tree.leaves(sh), jax.tree.leaves(sd)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-5)
  assert (np.asarray(hh) == np.asarray(hd)).mean() > 0.99
  np.testing.assert_allclose(float(mh['loss']), float(md['loss']), rtol=1e-5)


EPOCH_FUNCTIONS = {'device': ('train_epoch',), 'host': ('epoch_begin', 'epoch_step', 'epoch_end')}


@pytest.mark.parametrize('step_loop', [pytest.param('host', marks=pytest.mark.extended),
                                       'device'])
def test_labeled_sets_in_one_bucket_compile_the_epoch_once(step_loop):
  compile_counter.enable()
  assert train.labeled_capacity(1000, 64) == train.labeled_capacity(1400, 64) == 2048
  cfg = small_config(epochs=1, step_loop=step_loop)
  ds = fake_dataset(n=2000)
  setup, steps, data = build(cfg, 4, ds)
  names = EPOCH_FUNCTIONS[step_loop]
  before = {f: compile_counter.compile_counts().get(f, 0) for f in names}
  for n in (1000, 1400):
    (labeled, nl), (pool, npool) = buffers(setup, np.arange(n), np.arange(1500, 2000))
    state, history = steps.init(jax.random.key(0)), steps.empty_history(pool.shape[0])
    state, history, _, metrics = steps.train_epoch(state, history, {}, data, labeled, nl, pool,
                                                   npool, jax.random.key(1))
    assert int(metrics.steps) == -(-n // 64)
  after = compile_counter.compile_counts()
  assert {f: after[f] - before[f] for f in names} == {f: 1 for f in names}


def test_the_step_loop_runs_the_same_steps_on_device_and_from_the_host():
  """train.loop (the task model's epochs and VAAL's training): ``carry = step(i, carry, *consts)``
  for i < n, in one fori_loop or one compiled call per step (4 devices: one step at a time),
  against the loop written out in NumPy; 0 steps leave the carry as it is."""
  def step(i, carry, scale):
    x, count = carry
    return x * scale + i.astype(jnp.float32), count + 1

  scale = jnp.asarray([0.5, -1.5, 2.0], jnp.float32)
  start = (jnp.asarray([1.0, 2.0, 3.0], jnp.float32), jnp.int32(0))
  for n in (0, 1, 7):
    want = np.asarray(start[0])
    for i in range(n):
      want = want * np.asarray(scale) + np.float32(i)
    on_device = jax.jit(lambda c, s, k: train.loop.on_device(step, k, c, s))(
        start, scale, jnp.int32(n))
    on_host = train.loop.on_host(train.loop.jit_step(step), n, jax.tree.map(jnp.copy, start),
                                 scale, mesh=parallel.make_mesh(4))
    for got in (on_device, on_host):
      np.testing.assert_allclose(np.asarray(got[0]), want, rtol=1e-6)
      assert int(got[1]) == n


def test_step_schedule_halves_at_60_and_80_percent():
  t = config_lib.base_config().train
  lrs = [float(train.lr_for_epoch(t, jnp.int32(e))) for e in (0, 59, 60, 79, 80, 99)]
  np.testing.assert_allclose(lrs, [0.02, 0.02, 0.01, 0.01, 0.005, 0.005], rtol=1e-6)


def test_partial_batch_is_masked_out_of_loss_and_batchnorm():
  """A batch padded with garbage rows gives the same update as the unpadded batch alone."""
  cfg = small_config()
  model = models.create_model(cfg.model, 10)
  x = jax.random.normal(jax.random.key(0), (8, 16, 16, 3))
  variables = model.init(jax.random.key(1), x[:1], train=False)
  mask = jnp.arange(8) < 5
  garbage = jnp.where(mask[:, None, None, None], x, 1e3)
  a, va = model.apply(variables, x[:5], train=True, mutable=['batch_stats'])
  b, vb = model.apply(variables, garbage, train=True, mask=mask, mutable=['batch_stats'])
  np.testing.assert_allclose(np.asarray(a), np.asarray(b[:5]), rtol=1e-4, atol=1e-4)
  for p, q in zip(jax.tree.leaves(va), jax.tree.leaves(vb)):
    np.testing.assert_allclose(np.asarray(p), np.asarray(q), rtol=1e-4, atol=1e-5)


def test_batch_must_split_over_devices():
  cfg = small_config(batch_size=66)
  with pytest.raises(Exception, match='multiple of the 4 devices'):
    build(cfg, 4, fake_dataset(n=100))


def test_sharded_training_images_gather_exactly_and_train_like_replicated():
  """dataset.placement=sharded: each device holds 1/4 of the images; same epoch, bit for bit."""
  ds = fake_dataset(n=1598)  # not a multiple of 4: zero rows pad the last device's shard
  mesh = parallel.make_mesh(4)
  images = parallel.put_rows(ds.train_images, parallel.round_up(1598, 4), mesh)
  assert parallel.local_row_ranges(images) == [(0, 400), (400, 800), (800, 1200), (1200, 1600)]
  idx = np.random.default_rng(0).integers(0, 1598, 64).astype(np.int32)
  got = jax.jit(lambda t, i: parallel.gather_rows(t, i, mesh))(images,
                                                               parallel.put_sharded(idx, mesh))
  assert got.sharding.spec == jax.P('data', None, None, None)
  np.testing.assert_array_equal(np.asarray(got), ds.train_images[idx])

  cfg = small_config()
  results = []
  for placement in ('replicated', 'sharded'):
    cfg.dataset.placement = placement
    setup, steps, data = build(cfg, 4, ds, mesh)
    assert setup.shard_train == (placement == 'sharded')
    (labeled, nl), (pool, npool) = buffers(setup, np.arange(300), np.arange(300, 1000))
    state, history = steps.init(jax.random.key(0)), steps.empty_history(pool.shape[0])
    state, history, _, _ = steps.train_epoch(state, history, {}, data, labeled, nl, pool, npool,
                                             jax.random.key(1))
    results.append((data, state, history))
  (d_rep, s_rep, h_rep), (d_sh, s_sh, h_sh) = results
  assert d_sh.train_images.sharding.spec == jax.P('data', None, None, None)
  np.testing.assert_array_equal(np.asarray(d_sh.mean), np.asarray(d_rep.mean))  # exact sums
  np.testing.assert_array_equal(np.asarray(d_sh.std), np.asarray(d_rep.std))
  np.testing.assert_array_equal(np.asarray(h_sh), np.asarray(h_rep))
  for x, y in zip(jax.tree.leaves(s_rep.params), jax.tree.leaves(s_sh.params)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_diverged_fires_only_far_above_a_uniform_guess():
  """The divergence rule (issue 17): mean epoch loss > 10 ln(C), finite only."""
  assert train.DIVERGENCE_FACTOR == 10.0
  for c in (2, 10, 100):
    ceiling = 10 * np.log(c)
    assert not train.diverged(np.log(c), c)  # where training starts (a uniform guess)
    assert not train.diverged(3 * np.log(c), c)  # worse than any healthy epoch measured
    assert not train.diverged(ceiling * 0.999, c)
    assert train.diverged(ceiling * 1.001, c)
    assert train.diverged(1e30, c)
  assert not train.diverged(float('nan'), 10) and not train.diverged(float('inf'), 10)
  ok = {'finite': True, 'loss': 2.3, 'first_bad_step': -1}
  assert train.epoch_problem(0, 0, ok, 10) is None
  nan = {**ok, 'finite': False, 'loss': float('nan'), 'first_bad_step': 3}
  assert train.epoch_problem(1, 2, nan, 10).startswith(
      'training loss is NaN/inf in round 1, epoch 2, step 3; the last good checkpoint is kept')
  blown = train.epoch_problem(1, 4, {**ok, 'loss': 3.4e28}, 10)
  assert blown == ('training diverged in round 1, epoch 4: mean loss 3.4e+28 > 10 x ln(10 '
                   'classes) = 23; the last good checkpoint is kept (lower train.learning_rate)')


@pytest.mark.parametrize('devices', [1, 4])
@pytest.mark.parametrize('n, chunk', [(32, 8), (48, 20), (2048, 1000), (8, 40)])
def test_chunked_map_covers_buffers_that_are_not_whole_chunks(devices, n, chunk):
  """A labeled buffer is bucketed by the training batch (2048 = 16 x 128) while the eval chunk is
  1,000 (configs/cifar10_cpu.py): the chunked map pads each device's block and trims it, giving
  every row's own output in position order, with invalid rows flagged (a coreset run failed here
  with "cannot reshape (2048,) into (1, 2, 1000)")."""
  chunk = chunk // devices * devices
  mesh = parallel.make_mesh(devices)
  ids = np.arange(n, dtype=np.int32) * 3 + 1
  num = n - 5
  idx = jax.device_put(ids, parallel.sharded(mesh))

  @jax.jit
  def run(idx):
    return parallel.map_in_chunks(lambda i, ok: {'twice': 2 * i, 'ok': ok}, idx, jnp.int32(num),
                                  chunk, mesh)
  out = run(idx)
  np.testing.assert_array_equal(out['twice'], 2 * ids)
  np.testing.assert_array_equal(out['ok'], np.arange(n) < num)


def test_an_unrecorded_history_keeps_its_layout_and_the_epoch_compiles_once():
  """Without recorded rows (random, entropy, ...) the history passes through epoch_end untouched:
  it must come back in the layout empty_history made it in, or the second epoch compiles
  epoch_end again (it did, on 4 devices, when the empty history was split along the pool)."""
  compile_counter.enable()
  cfg = small_config(epochs=3, step_loop='host')
  ds = fake_dataset(n=1200)
  mesh = parallel.make_mesh(4)
  setup = train.make_setup(cfg, mesh, ds.train_images.shape[1:], 10, record=False)
  assert setup.recording.num_rows == 0
  steps, data = train.compile_steps(setup), input_pipeline.put_data(ds, mesh, setup.shard_train)
  (labeled, nl), (pool, npool) = buffers(setup, np.arange(300), np.arange(300, 1000))
  state, history = steps.init(jax.random.key(0)), steps.empty_history(pool.shape[0])
  layout = history.sharding
  before = compile_counter.compile_counts().get('epoch_end', 0)
  for epoch in range(3):
    state, history, _, _ = steps.train_epoch(state, history, {}, data, labeled, nl, pool, npool,
                                             jax.random.key(epoch))
    assert history.sharding == layout
  assert compile_counter.compile_counts()['epoch_end'] - before == 1
