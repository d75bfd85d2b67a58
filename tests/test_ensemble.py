"""Deep ensembles (strategy=ensemble): scores against NumPy, vmapped members against members
trained one by one, 1 == 4 devices, the CLI end to end with a SIGKILL mid-round, config errors,
sweep/report, and one compile per function across rounds.
"""

import dataclasses
import functools
import math
import os
import signal
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from _helpers import check_outputs, cli, load_results, tiny_config
from jaxdisp import (compile_counter, config_checks, config_lib, data, input_pipeline, parallel,
                     rounds, selection, strategies, train)
from jaxdisp.errors import ConfigError
from jaxdisp.strategies import ensemble

MESHES = {d: parallel.make_mesh(d) for d in (1, 4)}


# ---- NumPy references (the definitions, written out) ---------------------------------------------

def np_softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def np_entropy(p):
  return -sum(x * math.log(x) for x in p if x > 0)


def np_vote_entropy(member_probs):
  """[K, n, C] -> [n]: entropy of the fraction of members voting (argmax) for each class."""
  k, n, c = member_probs.shape
  out = np.zeros(n)
  for i in range(n):
    counts = np.bincount([int(np.argmax(member_probs[m, i])) for m in range(k)], minlength=c)
    out[i] = np_entropy(counts / k)
  return out


def np_bald(member_probs):
  """[K, n, C] -> [n]: H[mean_k p_k] - mean_k H[p_k]."""
  k, n, _ = member_probs.shape
  return np.array([np_entropy(member_probs[:, i].mean(0))
                   - np.mean([np_entropy(member_probs[m, i]) for m in range(k)])
                   for i in range(n)])


def np_rank(scores, tie, valid):
  """Valid positions by score descending, then tie descending, then position."""
  return sorted(range(valid), key=lambda i: (-scores[i], -tie[i], i))


# ---- (a) the scores ------------------------------------------------------------------------------

def test_scores_match_numpy_and_vote_ties_are_broken_by_mean_entropy():
  rng = np.random.default_rng(0)
  k, n, c = 5, 64, 4
  z = rng.standard_normal((k, n, c)) * 2
  z[:, :8] = z[:1, :8]  # unanimous members: vote entropy 0, BALD 0
  probs = np_softmax(z)
  got_vote = np.asarray(ensemble.vote_entropy(jnp.asarray(probs, jnp.float32)))
  got_bald = np.asarray(ensemble.mutual_information(jnp.asarray(probs, jnp.float32)))
  np.testing.assert_allclose(got_vote, np_vote_entropy(probs), atol=1e-6)
  np.testing.assert_allclose(got_bald, np_bald(probs), atol=1e-5)
  assert np.abs(got_vote[:8]).max() < 1e-6 and np.abs(got_bald[:8]).max() < 1e-5
  assert (got_bald >= -1e-6).all()
  # Few distinct votes: the boundary is a tie, ordered by the mean probability's entropy.
  assert len(np.unique(got_vote.round(5))) <= 7
  mean_entropy = np.array([np_entropy(p) for p in probs.mean(0)])
  tie = np.asarray(strategies.entropy(jnp.asarray(probs.mean(0), jnp.float32)))
  for budget in (5, 20, 40):
    pos, _ = selection.select_top(jnp.asarray(got_vote), jnp.asarray(tie), jnp.int32(n - 3),
                                  budget)
    want = np_rank(np_vote_entropy(probs).round(6), mean_entropy.round(6), n - 3)[:budget]
    assert np.asarray(pos).tolist() == want


def test_vote_entropy_never_contradicts_the_variation_ratio_up_to_five_members():
  """Beluch et al.'s variation ratio 1 - f_m / K: the vote entropy only splits its ties."""
  for k in range(2, 6):
    patterns = set()
    for votes in np.ndindex(*([k] * k)):  # every assignment of k votes to k classes
      patterns.add(tuple(sorted(np.bincount(votes, minlength=k), reverse=True)))
    rows = [(1 - p[0] / k, np_entropy(np.array(p) / k)) for p in patterns]
    assert not [(a, b) for a in rows for b in rows if a[0] < b[0] and a[1] > b[1] + 1e-12]


# ---- the pool pass of K members on 1 and 4 devices (c) -------------------------------------------

def _small_setup(mesh, members, **train_overrides):
  cfg = config_lib.base_config()
  cfg.model.name, cfg.model.width = 'small_cnn', 4
  cfg.train.batch_size, cfg.train.epochs, cfg.train.eval_batch_size = 32, 2, 32
  cfg.train.update(train_overrides)
  cfg.strategy, cfg.ensemble.members = 'ensemble', members
  return cfg, train.make_setup(cfg, mesh, (16, 16, 3), 10, record=False, members=members)


def _dataset(n=200, seed=0):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 10, n)
  images = rng.integers(0, 200, (n, 16, 16, 3)).astype(np.uint8)
  images[np.arange(n), labels % 16, :, labels % 3] = 255
  return types.SimpleNamespace(train_images=images, train_labels=labels,
                               test_images=images[:48], test_labels=labels[:48])


def _random_members(setup, members, seed):
  """A host stacked state with random weights (the same on every mesh)."""
  one = functools.partial(train.init_state, setup)
  shapes = jax.eval_shape(jax.vmap(one), jax.random.split(jax.random.key(0), members))
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    if 'var' in jax.tree_util.keystr(path):
      return np.ones(leaf.shape, leaf.dtype)
    return (rng.standard_normal(leaf.shape) * 0.5).astype(leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes)


def test_pool_pass_scores_match_numpy_and_select_the_same_ids_on_one_and_four_devices():
  """Every member's probabilities from one vmapped pass, reduced per chunk to the scores: equal to
  the definitions on each member's unchunked logits, and the same ids selected on 1 and 4
  devices (vote entropy with its entropy tie-break, and BALD)."""
  members, budget = 3, 20
  ds = _dataset()
  pool_ids, num_pool = np.arange(30, 190), 160
  got = {}
  for d in (1, 4):
    mesh = MESHES[d]
    cfg, setup = _small_setup(mesh, members)
    host = _random_members(setup, members, seed=1)
    states = parallel.put_replicated(host, mesh)
    dd = input_pipeline.put_data(ds, mesh)
    pool, n = train.index_buffer(pool_ids, train.pool_capacity(setup, num_pool), mesh)
    frozen = ml_collections.FrozenConfigDict(cfg)
    outputs = jax.jit(functools.partial(strategies.pool_outputs, setup, frozen),
                      static_argnames=('outputs',))(
        states, dd, pool, n, jax.random.key(3), outputs=('ensemble_vote', 'ensemble_bald',
                                                          'probs', 'features'))
    view = strategies.PoolView(cfg, mesh, 10, jnp.zeros((0, pool.shape[0]), jnp.int8), outputs,
                               n, {}, jnp.int32(0), jax.random.key(4))
    tie = strategies.tie_key(strategies.get('ensemble').tie_break(cfg), view, jax.random.key(5))
    picks = {}
    for score in ('vote', 'bald'):
      cfg.ensemble.score = score
      view = dataclasses.replace(view, cfg=cfg)
      scores = strategies.get('ensemble').score(view)
      picks[score] = np.asarray(selection.select_top(scores, tie, n, budget)[0]).tolist()
    got[d] = ({k: np.asarray(v)[:num_pool] for k, v in outputs.items()}, picks)
    if d == 4:  # the reference: each member's unchunked logits
      x = input_pipeline.normalize(dd.train_images[pool_ids], dd.mean, dd.std, jnp.float32)
      z = np.stack([np.asarray(setup.model.apply(
          train.variables(jax.tree.map(lambda a, m=m: a[m], host)), x, train=False))
          for m in range(members)]).astype(np.float64)
  (o4, p4), (o1, p1) = got[4], got[1]
  probs = np_softmax(z)
  vote, bald = np_vote_entropy(probs), np_bald(probs)
  np.testing.assert_allclose(o4['ensemble_vote'], vote, atol=1e-5)
  np.testing.assert_allclose(o4['ensemble_bald'], bald, atol=1e-4)
  np.testing.assert_allclose(o4['probs'], probs.mean(0), atol=1e-5)  # 'probs': the mean
  assert len(np.unique(vote.round(5))) <= 3  # K = 3 votes: 0, H(2/3, 1/3), log 3
  mean_entropy = np.array([np_entropy(p) for p in probs.mean(0)])
  assert p4['vote'] == np_rank(vote.round(5), mean_entropy, num_pool)[:budget]
  assert p4['bald'][:10] == np_rank(bald, mean_entropy, num_pool)[:10]
  assert p1 == p4  # the same ids on 1 and 4 devices
  for key in o4:
    np.testing.assert_allclose(o1[key], o4[key], atol=1e-5)


@pytest.mark.extended
def test_a_trained_round_selects_the_same_ids_on_one_and_four_devices():
  """Training, evaluation, pool pass and selection of a whole round (3 members, the tiny demo
  config): the same ids, for both scores, on 1 and 4 devices."""
  cfg = tiny_config(strategy='ensemble', **{'ensemble.members': 3, 'al.rounds': 1})
  config_checks.validate(cfg)
  ds = data.load_dataset(cfg.dataset)
  got = {}
  for d in (1, 4):
    exp = rounds.Experiment.create(cfg, ds, mesh=MESHES[d])
    ctx = rounds.begin_round(exp.initial_state(), exp)
    for _ in range(cfg.train.epochs):
      ctx, _ = rounds.train_epoch(exp, ctx)
    assert ctx.epoch == cfg.train.epochs
    for score in ('vote', 'bald'):
      cfg_s = tiny_config(strategy='ensemble', **{'ensemble.members': 3, 'al.rounds': 1,
                                                  'ensemble.score': score})
      exp_s = dataclasses.replace(exp, cfg=cfg_s)
      scored = rounds.score_pool(exp_s, ctx)
      assert scored.num_nonfinite == 0
      pos = rounds.select(exp_s, ctx, scored).positions
      assert len(set(pos.tolist())) == cfg.al.budget
      got[d, score] = ctx.pool_ids[pos].tolist()
  assert got[1, 'vote'] == got[4, 'vote'] and got[1, 'bald'] == got[4, 'bald']
  assert got[4, 'vote'] != got[4, 'bald']


# ---- (b) training: K members (vmap, lax.map or unrolled) == K members one by one ----------------

@pytest.mark.parametrize('step_loop, placement, member_map', [
    ('host', 'replicated', 'vmap'), ('host', 'replicated', 'loop'),
    pytest.param('host', 'replicated', 'map', marks=pytest.mark.extended),
    pytest.param('device', 'replicated', 'vmap', marks=pytest.mark.extended),
    pytest.param('device', 'replicated', 'map', marks=pytest.mark.extended),
    pytest.param('device', 'replicated', 'loop', marks=pytest.mark.extended),
    pytest.param('host', 'sharded', 'vmap', marks=pytest.mark.extended),
    pytest.param('host', 'sharded', 'loop', marks=pytest.mark.extended)])
def test_members_equal_members_trained_one_by_one(step_loop, placement, member_map):
  """On 4 devices, with the CPU's host step loop, the fused device epoch, and training images
  split over the devices (``dataset.placement=sharded``: a shard_map gather under the member
  map), for every ``train.member_map``: member m is the single model with m's keys."""
  members, epochs = 3, 2
  ds = _dataset()
  mesh = MESHES[4]
  _, setup_k = _small_setup(mesh, members, step_loop=step_loop)
  _, setup_1 = _small_setup(mesh, 1, step_loop=step_loop)
  sharded = placement == 'sharded'
  setup_k = dataclasses.replace(setup_k, shard_train=sharded, member_map=member_map)
  setup_1 = dataclasses.replace(setup_1, shard_train=sharded)
  steps_k, steps_1 = train.compile_steps(setup_k), train.compile_steps(setup_1)
  dd = input_pipeline.put_data(ds, mesh, sharded)
  labeled, nl = train.index_buffer(np.arange(70), train.labeled_capacity(70, 32), mesh)
  pool, npool = train.index_buffer(np.arange(100, 196), train.pool_capacity(setup_k, 96), mesh)
  k_init, k_train = jax.random.key(7), jax.random.key(8)

  def run(steps, key_init, key_train):
    state, history = steps.init(key_init), steps.empty_history(pool.shape[0])
    for _ in range(epochs):
      state, history, _, metrics = steps.train_epoch(state, history, {}, dd, labeled, nl, pool,
                                                     npool, key_train)
    return state, metrics.to_host()

  stacked, m_k = run(steps_k, k_init, k_train)
  assert int(m_k['steps']) == 3 and bool(m_k['finite'])
  assert stacked.epoch.tolist() == [epochs] * members
  losses = []
  for m in range(members):
    single, m_1 = run(steps_1, jax.random.fold_in(k_init, m), jax.random.fold_in(k_train, m))
    losses.append(m_1['loss'])
    for x, y in zip(jax.tree.leaves(single), jax.tree.leaves(stacked)):
      np.testing.assert_allclose(np.asarray(x), np.asarray(y)[m], rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(m_k['loss'], np.mean(losses), rtol=1e-5)
  # The members really differ: their own initialisation and their own data order.
  init = steps_k.init(k_init)
  w = max(jax.tree.leaves(init.params), key=lambda a: a.size)  # a kernel, not a zero bias
  assert not np.allclose(np.asarray(w[0]), np.asarray(w[1]))
  _, shuffled, *_ = jax.jit(functools.partial(train.members_epoch_begin, setup_k))(
      init, labeled, nl, k_train)
  order = np.asarray(shuffled)[:, :70]
  assert not (order[0] == order[1]).all() and sorted(order[0]) == sorted(order[1])
  ens = float(steps_k.evaluate(stacked, dd)['accuracy'])  # the mean probability's accuracy
  assert 0.0 <= ens <= 1.0


def test_member_maps_give_the_same_pool_outputs_and_auto_is_per_backend():
  """The pool pass and the test evaluation of the same members under vmap, lax.map and the
  unrolled loop agree; ``auto`` is the measured faster one per backend (benchmarks/
  ensemble_cost.py): the unrolled loop on CPU, vmap on GPU/TPU."""
  assert train.resolve_member_map('auto', 'cpu') == 'loop'
  assert [train.resolve_member_map('auto', b) for b in ('gpu', 'tpu')] == ['vmap', 'vmap']
  assert train.resolve_member_map('map', 'gpu') == 'map'
  members, mesh, ds = 3, MESHES[1], _dataset()
  cfg, setup = _small_setup(mesh, members)
  assert setup.member_map == 'loop'  # auto, on this CPU mesh
  host = _random_members(setup, members, seed=2)
  states = parallel.put_replicated(host, mesh)
  dd = input_pipeline.put_data(ds, mesh)
  pool, n = train.index_buffer(np.arange(40, 200), train.pool_capacity(setup, 160), mesh)
  frozen = ml_collections.FrozenConfigDict(cfg)
  got = {}
  for how in ('vmap', 'map', 'loop'):
    s = dataclasses.replace(setup, member_map=how)
    out = jax.jit(functools.partial(strategies.pool_outputs, s, frozen),
                  static_argnames=('outputs',))(
        states, dd, pool, n, jax.random.key(3), outputs=('ensemble_bald', 'probs', 'features'))
    probs = jax.jit(functools.partial(train.member_probs, s))(
        states, input_pipeline.normalize(dd.test_images[:16], dd.mean, dd.std, jnp.float32))
    got[how] = ({k: np.asarray(v) for k, v in out.items()}, np.asarray(probs),
                jax.device_get(jax.jit(functools.partial(train.evaluate_members, s))(states, dd)))
  for how in ('map', 'loop'):
    for key, v in got['vmap'][0].items():
      np.testing.assert_allclose(got[how][0][key], v, atol=1e-5)
    np.testing.assert_allclose(got[how][1], got['vmap'][1], atol=1e-5)
    assert got[how][1].shape == (members, 16, 10)
    assert got[how][2]['class_correct'].tolist() == got['vmap'][2]['class_correct'].tolist()


# ---- (f) config errors ---------------------------------------------------------------------------

@pytest.mark.parametrize('overrides, message', [
    ({'strategy': 'ensemble', 'ensemble.members': 1},
     'strategy=ensemble needs ensemble.members >= 2, got 1'),
    ({'strategy': 'ensemble', 'ensemble.members': 0}, 'needs ensemble.members >= 2, got 0'),
    ({'strategy': 'ensemble', 'ensemble.score': 'mean'},
     "ensemble.score='mean' must be 'vote' or 'bald'"),
    ({'strategy': 'ensemble', 'train.member_map': 'scan'},
     "train.member_map='scan' must be 'auto', 'vmap', 'map' or 'loop'"),
])
def test_bad_values_are_one_line_errors(overrides, message):
  with pytest.raises(ConfigError, match=message.replace('(', r'\(').replace(')', r'\)')) as e:
    config_checks.validate(tiny_config(**overrides))
  assert '\n' not in str(e.value)


def test_sweep_and_report_know_the_ensemble():
  from jaxdisp import report, sweep  # pylint: disable=g-import-not-at-top
  plan = sweep.plan(tiny_config, ['ensemble', 'dispersion'], [0], [('ensemble.members', '3')])
  assert [(s, c.ensemble.members) for s, _, c in plan] == [('ensemble', 3), ('dispersion', 3)]
  cost = report.pool_passes('ensemble', {'ensemble': {'members': 3}})
  assert cost.startswith('3 trainings') and '3 pool passes' in cost
  assert strategies.get('ensemble').members(tiny_config(**{'ensemble.members': 4})) == 4
  assert all(strategies.get(s).members(tiny_config()) == 1
             for s in strategies.builtin_names() if s != 'ensemble')


# ---- (g) rounds reuse the compiled functions -----------------------------------------------------

@pytest.mark.parametrize('record_always', [False, pytest.param(True, marks=pytest.mark.extended)])
def test_rounds_after_the_first_compile_nothing(record_always):
  """Every ensemble function compiles in round 0 (at most twice: the empty history's layout
  changes after the first epoch, as for every strategy without a history) and never again.
  With ``dispersion.record_always`` the history is member 0's (queried ids get a modal label)."""
  compile_counter.enable()
  cfg = tiny_config(strategy='ensemble', **{'ensemble.members': 2, 'train.epochs': 2,
                                            'al.rounds': 2,
                                            'dispersion.record_always': record_always})
  config_checks.validate(cfg)
  exp = rounds.Experiment.create(cfg, data.load_dataset(cfg.dataset))
  assert exp.setup.members == 2 and exp.setup.step_loop == 'host'
  names = ('init_members', 'members_epoch_begin', 'members_epoch_step', 'members_epoch_end',
           'evaluate_members', 'pool_outputs')
  before = {f: compile_counter.compile_counts().get(f, 0) for f in names}
  state = exp.initial_state()
  counts = []
  for r in range(3):
    state = rounds.al_round(state, exp)
    if r < 2:
      assert len(state.selected(r)) == cfg.al.budget
    now = compile_counter.compile_counts()
    counts.append({f: now.get(f, 0) - before[f] for f in names})
  assert all(1 <= n <= 2 for n in counts[0].values()), counts[0]
  assert counts[2] == counts[0]
  queried = state.selected(0)
  assert ((state.modal_label[queried] >= 0) == record_always).all()


# ---- (d, e) the CLI end to end, SIGKILLed mid-round and rerun ------------------------------------

@pytest.mark.extended  # ~60 s: the CLI + SIGKILL path every strategy shares is in the default run
def test_cli_runs_the_ensemble_and_a_sigkill_mid_round_resumes_to_the_same_ids(tmp_path):
  flags = ['--config.strategy=ensemble', '--config.ensemble.members=3']
  cfg = tiny_config(strategy='ensemble', **{'ensemble.members': 3})
  whole = tmp_path / 'whole'
  cli(whole, *flags)
  res = check_outputs(whole, cfg)  # budget new ids per round, all distinct
  killed = tmp_path / 'killed'
  proc = cli(killed, *flags, env={'JAXDISP_FAULT_KILL_AT': 'epoch@1:3'}, check=False)
  assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
  assert len(load_results(killed)['rounds']) == 1  # round 0 done; round 1 killed after epoch 3
  proc = cli(killed, *flags)
  assert 'round 1: resuming training at epoch 2' in proc.stderr
  again = load_results(killed)
  assert [r['selected'] for r in again['rounds']] == [r['selected'] for r in res['rounds']]
  assert [r['test_accuracy'] for r in again['rounds']] == [
      r['test_accuracy'] for r in res['rounds']]
  assert os.path.exists(os.path.join(killed, 'learning_curve.png'))
