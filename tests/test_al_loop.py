"""The round's pure steps, each on its own, reproduce the pinned golden round bit for bit."""

import json
import os
import sys

import numpy as np
import pytest

from _helpers import tiny_config
from jaxdisp import al_loop, data, train

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'golden', 'tiny_demo.json')
sys.path.insert(0, os.path.dirname(GOLDEN))
import make_golden  # pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.fixture(scope='module')
def exp():
  cfg = tiny_config(strategy='dispersion', num_devices=1)
  return al_loop.Experiment.create(cfg, data.load_dataset(cfg.dataset))


def test_steps_by_hand_reproduce_the_golden_round(exp):
  cfg = exp.cfg
  state = exp.initial_state()
  ctx = al_loop.begin_round(state, exp)
  assert ctx.round == 0 and ctx.epoch == 0
  assert int(ctx.num_labeled) == cfg.al.initial_size and len(ctx.pool_ids) == 500
  assert ctx.history.shape == (cfg.train.epochs, exp.pool_capacity)
  assert (np.asarray(ctx.history) == -1).all()
  for epoch in range(cfg.train.epochs):
    ctx, metrics = al_loop.train_epoch(exp, ctx)
    assert isinstance(metrics, train.EpochMetrics) and ctx.epoch == epoch + 1
    assert metrics.to_host()['steps'] == -(-cfg.al.initial_size // cfg.train.batch_size)
  history = np.asarray(ctx.history)
  assert (history[:, :500] >= 0).all() and (history[:, 500:] == -1).all()  # padding never
  accuracy = al_loop.test_accuracy(exp, ctx)
  scored = al_loop.score_pool(exp, ctx)
  assert scored.num_nonfinite == 0 and scored.scores.shape == (exp.pool_capacity,)
  assert set(scored.view.outputs) == {'probs'}  # the diagnostics' only pool pass
  chosen = al_loop.select(exp, ctx, scored)
  assert len(chosen.positions) == cfg.al.budget
  new = al_loop.finish_round(state, exp, ctx, accuracy, chosen)
  assert int(new.round) == 1 and int(new.num_labeled[0]) == cfg.al.initial_size
  with open(GOLDEN) as f:
    golden = json.load(f)
  if golden['platform'] == make_golden.platform_id():  # recorded on this machine and jax
    golden = golden['runs']['dispersion@1device']
    assert new.selected(0).tolist() == golden['selected'][0]
    assert float(new.test_accuracy[0]) == golden['test_accuracy'][0]
  # The same steps composed: al_round is a function of its inputs.
  again = al_loop.al_round(state, exp)
  assert again.selected(0).tolist() == new.selected(0).tolist()
  assert float(again.test_accuracy[0]) == float(new.test_accuracy[0])
  # The input state is not modified.
  assert int(state.round) == 0 and (state.labeled_round <= 0).all()


def test_the_last_round_queries_nothing(exp):
  state = exp.initial_state().replace(round=np.int32(exp.cfg.al.rounds))
  ctx = al_loop.begin_round(state, exp)
  assert not al_loop.needs_query(state, exp, ctx)
  new = al_loop.finish_round(state, exp, ctx, 0.5, None)
  assert al_loop.is_finished(new, exp.cfg) and (new.labeled_round == state.labeled_round).all()
