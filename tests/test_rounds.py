"""The round's pure steps, each on its own, reproduce the pinned golden round bit for bit; the
runner walks the same steps; the pool diagnostics reuse the round's scores."""

import dataclasses
import json
import os
import sys

import numpy as np
import pytest

from _helpers import tiny_config
from jaxdisp import data, rounds, strategies, train

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'golden', 'tiny_demo.json')
sys.path.insert(0, os.path.dirname(GOLDEN))
import make_golden  # pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.fixture(scope='module')
def exp():
  cfg = tiny_config(strategy='dispersion', num_devices=1)
  return rounds.Experiment.create(cfg, data.load_dataset(cfg.dataset))


def test_steps_by_hand_reproduce_the_golden_round(exp):
  cfg = exp.cfg
  state = exp.initial_state()
  ctx = rounds.begin_round(state, exp)
  assert ctx.round == 0 and ctx.epoch == 0
  assert int(ctx.num_labeled) == cfg.al.initial_size and len(ctx.pool_ids) == 500
  assert ctx.history.shape == (cfg.train.epochs, exp.pool_capacity)
  assert (np.asarray(ctx.history) == -1).all()
  for epoch in range(cfg.train.epochs):
    ctx, metrics = rounds.train_epoch(exp, ctx)
    assert isinstance(metrics, train.EpochMetrics) and ctx.epoch == epoch + 1
    assert metrics.to_host()['steps'] == -(-cfg.al.initial_size // cfg.train.batch_size)
  history = np.asarray(ctx.history)
  assert (history[:, :500] >= 0).all() and (history[:, 500:] == -1).all()  # padding never
  accuracy = rounds.test_accuracy(exp, ctx)
  scored = rounds.score_pool(exp, ctx)
  assert scored.num_nonfinite == 0 and scored.scores.shape == (exp.pool_capacity,)
  assert set(scored.view.outputs) == {'probs'}  # the diagnostics' only pool pass
  chosen = rounds.select(exp, ctx, scored)
  assert len(chosen.positions) == cfg.al.budget
  new = rounds.finish_round(state, exp, ctx, accuracy, chosen)
  assert int(new.round) == 1 and int(new.num_labeled[0]) == cfg.al.initial_size
  with open(GOLDEN) as f:
    golden = json.load(f)
  if make_golden.recorded_here(golden['platform']):  # recorded on this machine and jax
    golden = golden['runs']['dispersion@1device']
    assert new.selected(0).tolist() == golden['selected'][0]
    assert float(new.test_accuracy[0]) == golden['test_accuracy'][0]
  # The same steps composed: al_round is a function of its inputs.
  again = rounds.al_round(state, exp)
  assert again.selected(0).tolist() == new.selected(0).tolist()
  assert float(again.test_accuracy[0]) == float(new.test_accuracy[0])
  # The input state is not modified.
  assert int(state.round) == 0 and (state.labeled_round <= 0).all()


def test_the_last_round_queries_nothing(exp):
  state = exp.initial_state().replace(round=np.int32(exp.cfg.al.rounds))
  ctx = rounds.begin_round(state, exp)
  assert not rounds.needs_query(state, exp, ctx)
  new = rounds.finish_round(state, exp, ctx, 0.5, None)
  assert rounds.is_finished(new, exp.cfg) and (new.labeled_round == state.labeled_round).all()


def test_runner_walks_the_same_steps_as_al_round(exp):
  """``Runner(exp).round`` is ``al_round`` with hooks: the same ids and accuracy, plus timing."""
  from jaxdisp import experiment  # pylint: disable=g-import-not-at-top
  state = exp.initial_state()
  pure = rounds.al_round(state, exp)
  timed = experiment.Runner(exp).round(state)
  assert timed.selected(0).tolist() == pure.selected(0).tolist()
  assert float(timed.test_accuracy[0]) == float(pure.test_accuracy[0])
  assert (pure.seconds[0] == 0).all() and (timed.seconds[0] > 0).all()


class _Capture:
  """Runner hooks that keep the round's context and scores (for an independent reference)."""

  def __init__(self, runner):
    self.runner, self.got = runner, {}
    original = runner.finished

    def finished(ctx, scored, chosen):
      self.got.update(ctx=ctx, scored=scored, chosen=chosen)
      original(ctx, scored, chosen)
    runner.finished = finished


def _np_reference(ctx, view, num_classes):
  """Every diagnostic score of the real pool rows, in float64 NumPy from the round's probs,
  history and running statistics."""
  n = int(ctx.num_pool)
  probs = np.asarray(view.outputs['probs'], np.float64)[:n]
  top = -np.sort(-probs, -1)
  history = np.asarray(ctx.history)[:, :n]
  t = history.shape[0]
  counts = np.stack([(history == c).sum(0) for c in range(num_classes)])
  plogp = np.where(probs > 0, probs * np.log(np.where(probs > 0, probs, 1.0)), 0.0)
  return {'dispersion': 1.0 - counts.max(0) / t, 'margin': top[:, 0] - top[:, 1],
          'entropy': -plogp.sum(-1), 'least_confidence': 1.0 - top[:, 0],
          'bald': np.asarray(view.outputs['bald'])[:n],
          'flips': (history[1:] != history[:-1]).sum(0),
          'variability': np.sqrt(np.asarray(ctx.stats['prob_m2'], np.float64)[:n] / t),
          'margin_dynamics': np.asarray(ctx.stats['margin_sum'], np.float64)[:n] / t}


def test_diagnostics_reuse_the_round_scores_and_compute_dispersion_once(tmp_path, monkeypatch):
  """With every score available (history, all statistics, dropout), one round computes label
  dispersion exactly once, for the query and the diagnostics file together; the file holds every
  score with its name, label and direction, equal to a NumPy reference."""
  from jaxdisp import dispersion, experiment  # pylint: disable=g-import-not-at-top
  cfg = tiny_config(strategy='dispersion', num_devices=1, **{
      'dispersion.record_always': True, 'model.dropout': 0.3})
  exp = rounds.Experiment.create(cfg, data.load_dataset(cfg.dataset))
  calls = []
  original = dispersion.sharded_label_dispersion

  def counted(*args, **kwargs):
    calls.append(args[0].shape)
    return original(*args, **kwargs)
  monkeypatch.setattr(dispersion, 'sharded_label_dispersion', counted)
  runner = experiment.Runner(exp, str(tmp_path))
  capture = _Capture(runner)
  state = runner.round(exp.initial_state())
  assert len(calls) == 1  # the strategy's score; the diagnostics reused it
  with np.load(tmp_path / 'diagnostics' / 'round_0.npz') as z:
    d = {k: z[k] for k in z.files}
  names = ['dispersion', 'margin', 'entropy', 'least_confidence', 'bald', 'flips',
           'variability', 'margin_dynamics']
  assert d['score_names'].tolist() == names
  assert d['score_labels'].tolist() == ['dispersion', 'margin', 'entropy', 'least confidence',
                                        'BALD', 'flips', 'variability', 'margin dynamics']
  assert d['score_highest'].tolist() == [True, False, True, True, True, True, True, False]
  assert set(d) == set(names) | {'ids', 'correct', 'score_names', 'score_labels',
                                 'score_highest'}
  ctx, scored = capture.got['ctx'], capture.got['scored']
  ref = _np_reference(ctx, scored.view, exp.dataset.num_classes)
  n = int(ctx.num_pool)
  assert d['ids'].dtype == np.int64 and d['ids'].tolist() == ctx.pool_ids.tolist()
  probs = np.asarray(scored.view.outputs['probs'])[:n]
  truth = np.asarray(exp.dataset.train_labels)[ctx.pool_ids]
  assert d['correct'].dtype == bool and (d['correct'] == (probs.argmax(-1) == truth)).all()
  for name in names:
    assert d[name].dtype == np.float32 and d[name].shape == (n,), name
    np.testing.assert_allclose(d[name], ref[name], rtol=2e-6, atol=2e-7, err_msg=name)
  # the query's scores are the diagnostics' dispersion values (one array)
  ids = state.selected(0)
  by_id = dict(zip(d['ids'].tolist(), d['dispersion'].tolist()))
  np.testing.assert_array_equal(state.score[ids], [by_id[i] for i in ids])


def test_a_run_without_history_or_dropout_leaves_those_scores_out(exp):
  """Which scores a run's diagnostics hold: no prediction history (strategy=entropy) and no
  dropout leave the final model's three; log.pool_diagnostics=False none, and no pool output."""
  cfg = tiny_config(strategy='entropy', num_devices=1)
  entropy = dataclasses.replace(exp, cfg=cfg, strategy=strategies.get('entropy'), setup=(
      dataclasses.replace(exp.setup, recording=train.Recording.from_config(cfg, False))))
  assert [s.name for s in entropy.diagnostic_scores] == ['margin', 'entropy', 'least_confidence']
  assert [s.name for s in exp.diagnostic_scores] == ['dispersion', 'margin', 'entropy',
                                                     'least_confidence', 'flips']
  off = dataclasses.replace(exp, cfg=tiny_config(num_devices=1, **{'log.pool_diagnostics': False}))
  assert off.diagnostic_scores == () and off.pool_outputs == ()
