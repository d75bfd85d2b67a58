"""Training dynamics (flips, variability, margin_dynamics), k-center tie-break, class balance.

Every kernel against a NumPy reference written out plainly, on 1 and 4 devices; the running
statistics through a checkpoint; config errors; sweep/report through the registry; and one round
of the tiny demo config that scores with every addition and resumes mid-round bit for bit.
"""

import dataclasses
import functools
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _helpers import tiny_config
from jaxdisp import (checkpointing, config_checks, config_lib, data, dispersion as disp, experiment,
                     input_pipeline, parallel, preemption, rounds, selection, strategies, train)
from jaxdisp.errors import ConfigError
from jaxdisp.strategies import dynamics

ALL_STATS = ('margin_sum', 'prob_moments')


# ---- NumPy references (the definitions, written out) ---------------------------------------------

def np_softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def np_flips(history):
  """Changes of the predicted label between consecutive recorded epochs (-1 = not recorded)."""
  out = np.zeros(history.shape[1], np.int64)
  for i in range(history.shape[1]):
    seen = [int(v) for v in history[:, i] if v >= 0]
    out[i] = sum(a != b for a, b in zip(seen, seen[1:]))
  return out


def np_modal(history, num_classes):
  """Most frequent recorded label (ties: the smallest class), -1 when none."""
  out = np.full(history.shape[1], -1)
  for i in range(history.shape[1]):
    counts = np.bincount(history[:, i][history[:, i] >= 0], minlength=num_classes)
    if counts.sum():
      out[i] = int(np.argmax(counts))
  return out


def np_rank(scores, tie, valid):
  """Valid positions by score descending, then tie descending, then position."""
  return sorted(range(valid), key=lambda i: (-scores[i], -tie[i], i))


def np_top_kcenter(scores, valid, feats, labeled, budget):
  """Above the boundary score: all; the rest from the tied group by k-center greedy."""
  order = sorted(range(valid), key=lambda i: (-scores[i], i))
  boundary = scores[order[budget - 1]]
  above = [i for i in order if scores[i] > boundary]
  tied = [i for i in range(valid) if scores[i] == boundary]
  feats, labeled = feats.astype(np.float64), labeled.astype(np.float64)
  centers = list(labeled) + [feats[i] for i in above]
  dist = {i: min([((feats[i] - c) ** 2).sum() for c in centers], default=np.inf) for i in tied}
  chosen = []
  for _ in range(budget - len(above)):
    j = max((i for i in tied if i not in chosen), key=lambda i: (dist[i], -i))
    chosen.append(j)
    for i in tied:
      dist[i] = min(dist[i], ((feats[i] - feats[j]) ** 2).sum())
  return above + chosen


def np_top_balanced(scores, tie, classes, valid, budget, num_classes, quota=None):
  """Quota budget // C per class (or ``quota[c]``; best first, at most ``budget`` taken in rank
  order), the rest to the best remaining, in rank order."""
  order = np_rank(scores, tie, valid)
  quota = [budget // num_classes] * num_classes if quota is None else list(quota)
  taken, per_class = [], [0] * num_classes
  for i in order:
    c = classes[i]
    if 0 <= c < num_classes and per_class[c] < quota[c] and len(taken) < budget:
      taken.append(i)
      per_class[c] += 1
  rest = [i for i in order if i not in taken][:budget - len(taken)]
  rank = {p: r for r, p in enumerate(order)}
  return sorted(taken + rest, key=rank.get)


def put(x, mesh):
  return parallel.put_sharded(np.asarray(x), mesh)


MESHES = {d: parallel.make_mesh(d) for d in (1, 4)}


# ---- the record pass ---------------------------------------------------------------------------

def random_state(setup, seed):
  """A host TrainState with random weights (XLA:CPU takes long to compile ``model.init``)."""
  shapes = jax.eval_shape(functools.partial(train.init_state, setup), jax.random.key(0))
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = jax.tree_util.keystr(path)
    if 'var' in name:
      return np.ones(leaf.shape, leaf.dtype)
    return (rng.standard_normal(leaf.shape) * 0.5).astype(leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes)


def test_record_pass_statistics_match_numpy_on_one_and_four_devices():
  """One pool pass per epoch writes the history and updates every statistic; their scores are
  the definitions computed from the same logits in NumPy. A setup without statistics keeps none
  and writes the same history."""
  cfg = config_lib.base_config()
  cfg.model.name, cfg.model.width, cfg.train.eval_batch_size = 'small_cnn', 4, 32
  rng = np.random.default_rng(0)
  images = rng.integers(0, 255, (120, 16, 16, 3)).astype(np.uint8)
  ds = types.SimpleNamespace(train_images=images, train_labels=rng.integers(0, 10, 120),
                             test_images=images[:8], test_labels=np.zeros(8, np.int64))
  pool_ids, num_pool, epochs = np.arange(20, 110), 90, 3
  setup = train.make_setup(cfg, MESHES[1], images.shape[1:], 10, record=True)
  hosts = [random_state(setup, t).replace(epoch=np.int32(t)) for t in range(epochs)]
  apply = jax.jit(lambda v, x: setup.model.apply(v, x, train=False))
  got = {}
  for d, kinds in ((4, ALL_STATS), (1, ALL_STATS), (4, ())):
    mesh = MESHES[d]
    setup = train.make_setup(cfg, mesh, images.shape[1:], 10, record=True, stats=kinds)
    assert setup.recording.stat_fields == (('margin_sum', 'prob_mean', 'prob_m2') if kinds
                                           else ())
    dd = input_pipeline.put_data(ds, mesh)
    pool, n = train.index_buffer(pool_ids, train.pool_capacity(setup, num_pool), mesh)
    history = jnp.full((epochs, pool.shape[0]), -1, jnp.int8)
    stats = train.empty_stats(setup, pool.shape[0])
    record = jax.jit(functools.partial(train.record_pool, setup))
    logits = []
    for host in hosts:
      state = parallel.put_replicated(host, mesh)
      history, stats = record(state, dd, history, stats, pool, jnp.int32(num_pool),
                              jax.random.key(9))
      if (d, kinds) == (4, ALL_STATS):  # the reference's logits: the same model, unchunked
        x = input_pipeline.normalize(dd.train_images[pool_ids], dd.mean, dd.std, jnp.float32)
        logits.append(np.asarray(apply(train.variables(state), x)))
    got[d, kinds] = (np.asarray(history), {k: np.asarray(v) for k, v in stats.items()},
                     np.asarray(logits, np.float64), setup, history, stats, n)
  h, s, z, setup, history, stats, n = got[4, ALL_STATS]
  # The definitions, from the same logits: [T, P, C].
  probs = np_softmax(z)
  top2 = -np.sort(-z, -1)[..., :2]
  np.testing.assert_array_equal(h[:, :num_pool], z.argmax(-1))
  assert (h[:, num_pool:] == -1).all()
  np.testing.assert_allclose(s['prob_mean'][:num_pool], probs.max(-1).mean(0), rtol=1e-5)
  np.testing.assert_allclose(s['prob_m2'][:num_pool], probs.max(-1).var(0) * epochs,
                             rtol=1e-3, atol=1e-7)
  np.testing.assert_allclose(s['margin_sum'][:num_pool], (top2[..., 0] - top2[..., 1]).sum(0),
                             rtol=1e-5, atol=1e-5)
  assert all((v[num_pool:] == 0).all() for v in s.values())  # padding stays 0
  view = strategies.PoolView(None, MESHES[4], 10, history, {}, n, {}, jnp.int32(0),
                             jax.random.key(0), stats=stats)
  np.testing.assert_allclose(np.asarray(dynamics.variability(view))[:num_pool],
                             probs.max(-1).std(0), rtol=1e-3, atol=1e-6)
  np.testing.assert_allclose(np.asarray(dynamics.margin_dynamics(view))[:num_pool],
                             -(top2[..., 0] - top2[..., 1]).mean(0), rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(dynamics.flips(view)), np_flips(h))
  # 1 device = 4 devices; statistics off: the same history and nothing else.
  h1, s1 = got[1, ALL_STATS][:2]
  np.testing.assert_array_equal(h1, h)
  for k in s:
    np.testing.assert_allclose(s1[k], s[k], rtol=1e-6, atol=1e-7)
  np.testing.assert_array_equal(got[4, ()][0], h)
  assert got[4, ()][1] == {}


def test_flips_of_a_history_with_unrecorded_epochs():
  rng = np.random.default_rng(3)
  h = rng.integers(-1, 4, (7, 64)).astype(np.int8)
  for mesh in MESHES.values():
    view = strategies.PoolView(None, mesh, 4, put(h.T, mesh).T, {}, jnp.int32(64), {},
                               jnp.int32(0), jax.random.key(0))
    np.testing.assert_array_equal(np.asarray(dynamics.flips(view)), np_flips(h))


def test_checkpoint_keeps_the_running_statistics_bit_for_bit(tmp_path):
  mesh = MESHES[4]
  rng = np.random.default_rng(1)
  state = parallel.put_replicated({'w': rng.normal(size=(3, 2)).astype(np.float32),
                                   'epoch': np.int32(2)}, mesh)
  history = put(rng.integers(0, 10, (6, 32)).astype(np.int8).T, mesh).T
  stats = {k: put(rng.normal(size=32).astype(np.float32), mesh)
           for k in ('margin_sum', 'prob_mean', 'prob_m2')}
  ckpt = checkpointing.Checkpointer(str(tmp_path), epochs=6, every_epochs=2)
  assert ckpt.maybe_save_train(0, 2, state, history, stats=stats)
  ckpt.wait()
  zeros = jax.tree.map(jnp.zeros_like, (state, history, stats))
  got_state, got_history, got_stats = ckpt.restore_train(0, *zeros)
  np.testing.assert_array_equal(np.asarray(got_history), np.asarray(history))
  assert set(got_stats) == set(stats)
  for k in stats:
    np.testing.assert_array_equal(np.asarray(got_stats[k]), np.asarray(stats[k]))
    assert got_stats[k].sharding.is_equivalent_to(stats[k].sharding, 1)
  np.testing.assert_array_equal(np.asarray(got_state['w']), np.asarray(state['w']))
  ckpt.close()
  plain = checkpointing.Checkpointer(str(tmp_path / 'plain'), epochs=6, every_epochs=2)
  assert plain.maybe_save_train(0, 2, state, history, stats={})  # a run without statistics
  plain.wait()
  assert plain.restore_train(0, zeros[0], zeros[1], {})[2] == {}
  plain.close()


# ---- selection ---------------------------------------------------------------------------------

@pytest.mark.parametrize('case', ['ties', 'no_labeled', 'all_tied', 'above_fills_most'])
def test_select_top_kcenter_matches_numpy_on_one_and_four_devices(case):
  rng = np.random.default_rng(4)
  n, valid, budget = 96, 90, 13
  scores = (rng.integers(0, 5, n) / 4).astype(np.float32)
  if case == 'all_tied':
    scores[:] = 0.5
  if case == 'above_fills_most':
    scores = np.round(rng.random(n), 2).astype(np.float32)
  scores[valid:] = 9.0  # padding scores highest: never selected
  feats = rng.normal(size=(n, 5)).astype(np.float32)
  labeled = rng.normal(size=(24, 5)).astype(np.float32)
  num_labeled = 0 if case == 'no_labeled' else 21
  expected = np_top_kcenter(scores, valid, feats, labeled[:num_labeled], budget)
  for mesh in MESHES.values():
    pos, got_scores = selection.select_top_kcenter(
        put(scores, mesh), jnp.int32(valid), put(feats, mesh), put(labeled, mesh),
        jnp.int32(num_labeled), budget, chunk=8)
    assert np.asarray(pos).tolist() == expected, case
    np.testing.assert_array_equal(np.asarray(got_scores), scores[expected])


def test_the_wacv_quota_follows_the_formula():
  # Omega_c = max(0, floor((2b + (k+1) b) / C) - n_c), Bengar et al. (WACV 2022), here with
  # b = 10, C = 4 and k = 0 (the first query, 2b = 20 labels held): floor(30 / 4) = 7 a class.
  n_c = np.array([9, 3, 0, 8])
  want = [max(0, (2 * 10 + (0 + 1) * 10) // 4 - n) for n in n_c]
  assert want == [0, 4, 7, 0]
  # k = 1: 30 held, floor(40 / 4) = 10 a class
  assert np.asarray(selection.cumulative_quota([12, 6, 7, 5], 10)).tolist() == [
      max(0, (2 * 10 + 2 * 10) // 4 - n) for n in (12, 6, 7, 5)] == [0, 4, 3, 5]
  assert np.asarray(selection.cumulative_quota(n_c, 10)).tolist() == want
  # a class already over its share gets 0, not a negative quota; floor, not round
  assert np.asarray(selection.cumulative_quota([15, 0, 0], 4)).tolist() == [0, 6, 6]
  ids = np.array([3, 0, 4, 4, 9, 9, 9])  # the last two are padding
  labels = np.array([0, 1, 2, 1, 0, 3, 9, 9, 9, 2])
  # labels[[3, 0, 4, 4, 9]] = 1, 0, 0, 0, 2: class 0 three times, 1 once, 2 once, 3 never
  assert np.asarray(selection.class_counts(labels, ids, 5, 4)).tolist() == [3, 1, 1, 0]


@pytest.mark.parametrize('case', ['even', 'small_class', 'remainder', 'unknown_class',
                                  'budget_below_classes', 'quota', 'quota_over_budget'])
def test_select_top_balanced_matches_numpy_on_one_and_four_devices(case):
  rng = np.random.default_rng(5)
  n, valid, classes_n = 128, 121, 4
  budget = {'remainder': 23, 'budget_below_classes': 3}.get(case, 20)
  scores = (rng.integers(0, 6, n) / 5).astype(np.float32)
  tie = rng.random(n).astype(np.float32)
  classes = rng.integers(0, classes_n, n).astype(np.int32)
  if case == 'small_class':
    classes[classes == 3] = 2
    classes[[7, 50]] = 3  # two samples of class 3 against a quota of 5
  if case == 'unknown_class':
    classes[::5] = -1
  quota = {'quota': [0, 12, 3, 5], 'quota_over_budget': [9, 9, 9, 9]}.get(case)
  expected = np_top_balanced(scores, tie, classes, valid, budget, classes_n, quota)
  for mesh in MESHES.values():
    pos, got_scores = selection.select_top_balanced(
        put(scores, mesh), put(tie, mesh), put(classes, mesh), jnp.int32(valid), budget,
        classes_n, None if quota is None else jnp.asarray(quota, jnp.int32))
    assert np.asarray(pos).tolist() == expected, case
    np.testing.assert_array_equal(np.asarray(got_scores), scores[expected])
  counts = np.bincount(classes[expected][classes[expected] >= 0], minlength=classes_n)
  available = np.bincount(classes[:valid][classes[:valid] >= 0], minlength=classes_n)
  if quota is None:
    assert (counts >= np.minimum(budget // classes_n, available)).all()
  elif case == 'quota':  # the quotas sum to the budget: each class gets exactly its quota
    assert counts.tolist() == quota


def test_pool_modal_labels_match_numpy_on_one_and_four_devices():
  rng = np.random.default_rng(6)
  for classes_n in (3, 12):
    h = rng.integers(-1, classes_n, (9, 256)).astype(np.int8)
    h[:, 5] = -1  # never recorded
    expected = np_modal(h, classes_n)
    np.testing.assert_array_equal(np.asarray(disp.pool_modal_labels(h, classes_n, block=48)),
                                  expected)
    for mesh in MESHES.values():
      got = disp.sharded_pool_modal_labels(put(h.T, mesh).T, classes_n, mesh)
      np.testing.assert_array_equal(np.asarray(got), expected)


# ---- config, sweep, report ---------------------------------------------------------------------

@pytest.mark.parametrize('overrides, message', [
    ({'dispersion.tie_break': 'diverse'},
     "dispersion.tie_break='diverse' must be 'random', 'entropy', 'margin' or 'kcenter'"),
    ({'al.class_balance': 'soft'},
     "al.class_balance='soft' must be 'none', 'modal' or 'modal_batch'"),
    ({'dispersion.tie_break': 'kcenter', 'al.class_balance': 'modal'},
     'al.class_balance=modal cannot be combined with dispersion.tie_break=kcenter'),
    ({'strategy': 'coreset', 'al.class_balance': 'modal'},
     'al.class_balance=modal needs a scoring strategy; strategy=coreset chooses its batch'),
    ({'strategy': 'flips', 'train.epochs': 1}, 'strategy=flips needs at least 2 recorded epochs'),
    ({'strategy': 'variability', 'dispersion.record_from_epoch': 5},
     'strategy=variability needs at least 2 recorded epochs, got T=1'),
])
def test_bad_values_are_one_line_errors(overrides, message):
  with pytest.raises(ConfigError, match=message.replace('(', r'\(').replace(')', r'\)')) as e:
    config_checks.validate(tiny_config(**overrides))
  assert '\n' not in str(e.value)


def test_sweep_and_report_take_the_new_strategies_from_the_registry(tmp_path):
  from jaxdisp import report, sweep  # pylint: disable=g-import-not-at-top
  from test_report import md_table, write_run  # pylint: disable=g-import-not-at-top
  names = ['flips', 'variability', 'margin_dynamics']
  plan = sweep.plan(tiny_config, names + ['dispersion'], [0],
                    [('al.class_balance', 'modal')])
  assert [(s, c.al.class_balance) for s, _, c in plan] == [
      (s, 'modal') for s in names + ['dispersion']]
  assert sweep.plan(tiny_config, ['dispersion'], [0],
                    [('dispersion.tie_break', 'kcenter')])[0][2].dispersion.tie_break == 'kcenter'
  for s in ['random'] + names:
    write_run(tmp_path, s, 0, [0.4, 0.5, 0.6])
  header, _ = md_table(open(report.write_report(str(tmp_path))).read(), 'labels')
  assert header[1:] == [f'{s} (1 seed)' for s in ['random'] + names]  # registry order


# ---- one round of the tiny demo config ---------------------------------------------------------

def _all_stats_variability(view):
  return dynamics.variability(view)


def test_round_scores_with_every_addition_and_resumes_mid_round_bit_for_bit(tmp_path):
  """One experiment that records every statistic (4 devices): a round checkpointed every 2
  epochs, run again from its epoch-4 checkpoint, selects the same ids with the same scores (the
  running statistics were restored, not restarted); the trained round then selects ``budget``
  ids with each new strategy, with tie_break=kcenter and with class_balance=modal."""
  strategies.register(strategies.Strategy(
      name='_all_dynamics', summary='variability, recording every statistic',
      records=('labels',) + ALL_STATS, score=_all_stats_variability))
  try:
    cfg = tiny_config(strategy='_all_dynamics', **{'al.rounds': 1})
    config_checks.validate(cfg)
    exp = rounds.Experiment.create(cfg, data.load_dataset(cfg.dataset))
    assert exp.mesh.size == 4
    state0 = exp.initial_state()
    ckpt = checkpointing.Checkpointer(str(tmp_path / 'ck'), cfg.train.epochs, 2)
    progress = types.SimpleNamespace(start_round=lambda *a: None, on_epoch=lambda *a: None)
    runner = experiment.Runner(exp, str(tmp_path), ckpt, progress)
    runner.stop = preemption.StopSignal()
    first = runner.round(state0)  # saves the round at epochs 2 and 4
    like = rounds.begin_round(state0, exp)
    restored = ckpt.restore_train(0, like.train_state, like.history, like.stats)
    assert int(restored[0].epoch) == 4 and set(restored[2]) == {'margin_sum', 'prob_mean',
                                                               'prob_m2'}
    assert np.abs(np.asarray(restored[2]['margin_sum'])).sum() > 0
    resumed = runner.round(state0)  # restores epoch 4, trains 4 and 5
    ckpt.close()
    assert resumed.selected(0).tolist() == first.selected(0).tolist()
    ids = first.selected(0)
    np.testing.assert_array_equal(resumed.score[ids], first.score[ids])
    assert float(resumed.test_accuracy[0]) == float(first.test_accuracy[0])

    ctx = rounds.begin_round(state0, exp)
    for _ in range(cfg.train.epochs):
      ctx, _ = rounds.train_epoch(exp, ctx)
    budget, num_pool = cfg.al.budget, int(ctx.num_pool)
    variants = [('flips', {}), ('variability', {}), ('margin_dynamics', {}),
                ('flips', {'dispersion.tie_break': 'kcenter'}),
                ('dispersion', {'dispersion.tie_break': 'kcenter'}),
                ('dispersion', {'al.class_balance': 'modal_batch'}),
                ('variability', {'al.class_balance': 'modal_batch'}),
                ('entropy', {'al.class_balance': 'modal_batch'}),  # no history: the final argmax
                ('dispersion', {'al.class_balance': 'modal'})]  # the WACV quota
    trained = ctx
    for name, overrides in variants:
      ctx = trained
      if name == 'entropy':
        ctx = trained.replace(history=trained.history[:0])
      cfg_v = tiny_config(strategy=name, **{'al.rounds': 1, **overrides})
      config_checks.validate(cfg_v)
      exp_v = dataclasses.replace(exp, cfg=cfg_v, strategy=strategies.get(name))
      scored = rounds.score_pool(exp_v, ctx)
      assert scored.num_nonfinite == 0
      chosen = rounds.select(exp_v, ctx, scored)
      pos = chosen.positions
      assert len(pos) == len(set(pos.tolist())) == budget and (pos < num_pool).all(), name
      scores = np.asarray(scored.scores)[:num_pool]
      np.testing.assert_array_equal(chosen.scores, scores[pos])
      if overrides.get('dispersion.tie_break') == 'kcenter':
        boundary = chosen.scores.min()
        assert set(np.flatnonzero(scores > boundary)) <= set(pos.tolist())
        assert exp_v.labeled_outputs == ('features',)
      if 'al.class_balance' in overrides:
        if ctx.history.shape[0]:
          classes = np_modal(np.asarray(ctx.history)[:, :num_pool], exp.dataset.num_classes)
        else:
          classes = np.asarray(scored.view.outputs['probs'])[:num_pool].argmax(-1)
        c = exp.dataset.num_classes
        quota = np.full(c, budget // c)
        if overrides['al.class_balance'] == 'modal':  # from the labels the model trained on
          held = np.asarray(exp.data.train_labels)[np.asarray(ctx.labeled)[:int(ctx.num_labeled)]]
          n_c = np.bincount(held, minlength=c)
          quota = np.maximum((n_c.sum() + budget) // c - n_c, 0)
        got = np.bincount(classes[pos], minlength=c)
        have = np.bincount(classes, minlength=c)
        if quota.sum() <= budget:
          assert (got >= np.minimum(quota, have)).all(), (name, got, have, quota)
      if not overrides:
        top = np.sort(scores)[::-1][:budget]
        np.testing.assert_array_equal(np.sort(chosen.scores)[::-1], top)  # the top scores
  finally:
    strategies.unregister('_all_dynamics')
