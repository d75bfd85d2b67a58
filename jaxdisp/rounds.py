"""The active-learning round as pure steps over explicit state, composed in one place.

A round is five steps, each a function of its inputs only (every random choice is derived from
``(seed, round, stream, epoch, step)`` by ``fold_in``), over the experiment's
:class:`~jaxdisp.al_state.ALState`; :func:`al_round` is their one composition:

  ctx = begin_round(state, exp)              # fresh model, index buffers, empty history/stats
  ctx, metrics = train_epoch(exp, ctx)       # x train.epochs (records the pool's predictions)
  accuracy, per_class = evaluate(exp, ctx)
  scored = score_pool(exp, ctx)              # one pool pass; the strategy's scores
  state = finish_round(state, exp, ctx, accuracy, select(exp, ctx, scored), seconds)

Checkpoints, the NaN policy, preemption, progress, outputs, timing and the pool diagnostics are
the runner's (``jaxdisp.experiment.Runner``): it passes :func:`al_round` a :class:`RoundHooks`
that runs them between the steps, and does not re-state the steps or their order. Nothing here
calls back into it.
"""

from __future__ import annotations

import dataclasses
import functools

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxdisp import dispersion as disp, input_pipeline, oracle, parallel, selection, strategies
from jaxdisp import contract, train
from jaxdisp.al_state import ALState, initial_state, is_finished
from jaxdisp.data import Dataset
from jaxdisp.errors import NumericalError

Array = jax.Array

# Streams of randomness, folded into the round key.
_INIT, _TRAIN, _POOL, _ACQUIRE = range(4)


@dataclasses.dataclass(frozen=True)
class Experiment:
  """Everything fixed for a run: config, strategy, data on device, compiled steps, buffer sizes."""
  cfg: ml_collections.ConfigDict
  dataset: Dataset
  mesh: object
  strategy: strategies.Strategy
  setup: train.TrainSetup
  steps: train.Steps
  data: input_pipeline.DeviceData
  pool_pass: object  # jitted strategies.pool_outputs(setup, cfg, ...), ``outputs`` static
  labeled_capacity: int  # fits the final labeled set: one compiled epoch for all rounds
  pool_capacity: int

  @classmethod
  def create(cls, cfg, dataset: Dataset, mesh=None) -> 'Experiment':
    mesh = mesh if mesh is not None else parallel.make_mesh(cfg.num_devices)
    strategy = strategies.get(cfg.strategy)
    record = bool(strategy.records) or cfg.dispersion.record_always
    # train.STATS kinds: the strategy's; all of them with record_always (for the diagnostics)
    stats = (tuple(train.STATS) if cfg.dispersion.record_always
             else tuple(r for r in strategy.records if r != 'labels'))
    setup = train.make_setup(cfg, mesh, dataset.image_shape, dataset.num_classes, record, stats,
                             members=strategy.members(cfg), aux=strategy.aux_head(cfg))
    frozen = ml_collections.FrozenConfigDict(cfg)
    pool_pass = jax.jit(functools.partial(strategies.pool_outputs, setup, frozen),
                        static_argnames=('outputs',))
    a = cfg.al
    final = a.initial_size + a.budget * a.rounds
    pool = dataset.num_train - a.initial_size
    if a.pool_subset:
      pool = min(pool, a.pool_subset)
    data = input_pipeline.put_data(dataset, mesh, setup.shard_train)
    if cfg.oracle.noise > 0 or cfg.oracle.noise_initial > 0:  # the simulated oracle: some wrong
      answers = oracle.noisy_answers(cfg, dataset.train_labels, dataset.num_classes)
      data = data.replace(train_labels=parallel.put_replicated(answers, mesh))
    return cls(cfg, dataset, mesh, strategy, setup, train.compile_steps(setup), data, pool_pass,
               train.labeled_capacity(final, cfg.train.batch_size),
               train.pool_capacity(setup, pool))

  def with_train_labels(self, labels: np.ndarray) -> 'Experiment':
    """The same experiment training on ``labels`` (e.g. the oracle's answers) instead."""
    on_device = parallel.put_replicated(np.asarray(labels, np.int32), self.mesh)
    return dataclasses.replace(self, data=self.data.replace(train_labels=on_device))

  def initial_state(self) -> ALState:
    a = self.cfg.al
    return initial_state(self.cfg.seed, self.dataset.num_train, a.initial_size, a.rounds,
                         self.dataset.num_classes)

  @property
  def tie_rule(self) -> str:
    return self.strategy.tie_break(self.cfg)

  @property
  def class_balance(self) -> bool:
    """``al.class_balance=modal|modal_batch`` (for scoring strategies; batch selectors are
    refused)."""
    return self.cfg.al.class_balance != 'none'

  @property
  def pool_outputs(self) -> tuple[str, ...]:
    """What the round's one pool pass computes: the strategy's outputs, its tie-break's, the
    class balance's (the final model's argmax when no history is recorded), and the pool
    diagnostics' (probabilities for ``correct``, and what each available score reads)."""
    names = list(self.strategy.outputs) + list(strategies.tie_outputs(self.tie_rule))
    if self.class_balance and not self.setup.recording.num_rows:
      names.append('probs')
    if self.cfg.log.pool_diagnostics:
      names += ['probs'] + [o for s in self.diagnostic_scores for o in s.outputs]
    return tuple(dict.fromkeys(names))

  @property
  def diagnostic_scores(self) -> tuple[strategies.PoolScore, ...]:
    """The registered strategies' diagnostics this run writes (none with
    ``log.pool_diagnostics=False``): those available under the config whose per-epoch records
    the run keeps, in registry order."""
    if not self.cfg.log.pool_diagnostics:
      return ()
    rec = self.setup.recording
    kept = {'labels', *rec.stats} if rec.num_rows else set()
    return tuple(s for s in strategies.pool_scores()
                 if s.available(self.cfg) and set(s.records) <= kept)

  @property
  def scores_last_model(self) -> bool:
    """``log.final_diagnostics``: the last round scores its pool too (no query), for them."""
    return self.cfg.log.final_diagnostics and self.cfg.log.pool_diagnostics

  @property
  def labeled_outputs(self) -> tuple[str, ...]:
    """What the labeled-set pass computes (none: no pass): the strategy's and its tie-break's."""
    names = list(self.strategy.labeled_outputs) + list(
        strategies.tie_labeled_outputs(self.tie_rule))
    return tuple(dict.fromkeys(names))


@flax.struct.dataclass
class RoundCtx:
  """One round in flight (a pytree): the model being trained and the round's buffers."""
  train_state: train.TrainState  # a deep ensemble's: every member's, stacked on a leading axis
  history: Array  # [T, pool_capacity], split along the pool
  stats: dict  # running record statistics {field: float32 [pool_capacity]} (train.STATS)
  labeled: Array  # [labeled_capacity] dataset ids, split over ``data``
  num_labeled: np.ndarray
  pool: Array  # [pool_capacity] dataset ids
  num_pool: np.ndarray
  pool_ids: np.ndarray  # host copy of the real pool ids
  key: Array  # the round's key
  round: int = flax.struct.field(pytree_node=False, default=0)

  @property
  def epoch(self) -> int:
    """Epochs completed (an ensemble's members move together)."""
    return int(np.asarray(self.train_state.epoch).reshape(-1)[0])


def _stream(ctx: RoundCtx, stream: int) -> Array:
  return jax.random.fold_in(ctx.key, stream)


def pool_ids_for_round(state: ALState, exp: Experiment, key) -> np.ndarray:
  """The unlabeled ids scored this round (all, or a keyed random ``al.pool_subset``)."""
  ids = np.flatnonzero(state.labeled_round < 0)
  subset = exp.cfg.al.pool_subset
  if subset and subset < len(ids):
    pick = np.asarray(jax.random.permutation(key, len(ids)))[:subset]
    ids = np.sort(ids[pick])
  return ids


def begin_round(state: ALState, exp: Experiment) -> RoundCtx:
  """A fresh model (trained from scratch every round) and the round's index buffers."""
  r = int(state.round)
  key = jax.random.fold_in(jnp.asarray(state.key), r)
  labeled_ids = np.flatnonzero(state.labeled_round >= 0)
  pool_ids = pool_ids_for_round(state, exp, jax.random.fold_in(key, _POOL))
  k_init, _ = jax.random.split(jax.random.fold_in(key, _TRAIN))
  labeled, num_labeled = train.index_buffer(labeled_ids, exp.labeled_capacity, exp.mesh)
  pool, num_pool = train.index_buffer(pool_ids, exp.pool_capacity, exp.mesh)
  return RoundCtx(train_state=exp.steps.init(k_init),
                  history=exp.steps.empty_history(exp.pool_capacity),
                  stats=exp.steps.empty_stats(exp.pool_capacity), labeled=labeled,
                  num_labeled=num_labeled, pool=pool, num_pool=num_pool, pool_ids=pool_ids,
                  key=key, round=r)


def train_epoch(exp: Experiment, ctx: RoundCtx) -> tuple[RoundCtx, train.EpochMetrics]:
  """One epoch (and, on recorded epochs, one pool pass into the history and the running
  statistics). Donates ``ctx``'s state, history and statistics."""
  _, k_train = jax.random.split(_stream(ctx, _TRAIN))
  state, history, stats, metrics = exp.steps.train_epoch(
      ctx.train_state, ctx.history, ctx.stats, exp.data, ctx.labeled, ctx.num_labeled, ctx.pool,
      ctx.num_pool, k_train)
  return ctx.replace(train_state=state, history=history, stats=stats), metrics


def evaluate(exp: Experiment, ctx: RoundCtx) -> tuple[float, np.ndarray]:
  """(test accuracy, [C] accuracy of each true class; nan for a class without test samples)."""
  out = exp.steps.evaluate(ctx.train_state, exp.data)
  totals = np.bincount(np.asarray(exp.dataset.test_labels), minlength=exp.dataset.num_classes)
  hits = parallel.to_host(out['class_correct'])
  with np.errstate(invalid='ignore', divide='ignore'):
    per_class = np.where(totals > 0, hits / np.maximum(totals, 1), np.nan).astype(np.float32)
  return float(out['accuracy']), per_class


def test_accuracy(exp: Experiment, ctx: RoundCtx) -> float:
  return evaluate(exp, ctx)[0]


@dataclasses.dataclass(frozen=True)
class Scored:
  """The strategy's view of the trained round, its scores (None for batch selectors) and the
  number of padded-out rows with NaN/inf scores or outputs."""
  view: strategies.PoolView
  scores: Array | None
  num_nonfinite: int


def score_pool(exp: Experiment, ctx: RoundCtx) -> Scored:
  """One pass of the final model over the pool (and the labeled set if the strategy asks),
  then the strategy's scores."""
  k_score = jax.random.split(_stream(ctx, _ACQUIRE))[0]
  s = exp.strategy
  outputs = exp.pool_pass(ctx.train_state, exp.data, ctx.pool, ctx.num_pool, k_score,
                          outputs=exp.pool_outputs)
  labeled_outputs = {}
  if exp.labeled_outputs:
    labeled_outputs = exp.pool_pass(ctx.train_state, exp.data, ctx.labeled, ctx.num_labeled,
                                    k_score, outputs=exp.labeled_outputs)
  view = strategies.PoolView(exp.cfg, exp.mesh, exp.dataset.num_classes, ctx.history, outputs,
                             ctx.num_pool, labeled_outputs, ctx.num_labeled, k_score,
                             stats=ctx.stats, data=exp.data, setup=exp.setup, pool=ctx.pool,
                             labeled=ctx.labeled)
  scores = None
  if s.score is not None:  # the contract is checked here, once (jaxdisp.contract)
    scores = contract.call(s.name, s.score, 'score', view)
    contract.check_scores(s.name, scores, ctx.pool.shape[0])
  checked = [scores] if scores is not None else [outputs[o] for o in s.outputs]
  bad = int(selection.count_nonfinite_rows(checked, ctx.num_pool)) if checked else 0
  return Scored(view, scores, bad)


def select(exp: Experiment, ctx: RoundCtx, scored: Scored) -> selection.Selection:
  """The ``al.budget`` pool positions the strategy queries: its own batch, or the top scores (ties
  by the tie rule, or filled by k-center greedy), split over classes with al.class_balance."""
  budget = min(exp.cfg.al.budget, int(ctx.num_pool))
  view = scored.view
  if scored.scores is None:
    name = exp.strategy.name
    result = contract.call(name, exp.strategy.select, 'select', view, budget)
    return selection.Selection(*contract.check_selection(name, result, budget,
                                                         int(ctx.num_pool)))
  if exp.tie_rule == 'kcenter':  # (config validation refuses kcenter with class balance)
    positions, scores = selection.select_top_kcenter(
        scored.scores, ctx.num_pool, view.outputs['features'],
        view.labeled_outputs['features'], ctx.num_labeled, budget)
  else:
    k_tie = jax.random.split(_stream(ctx, _ACQUIRE))[1]
    tie = strategies.tie_key(exp.tie_rule, view, k_tie)
    if exp.class_balance:
      quota = None if exp.cfg.al.class_balance == 'modal_batch' else selection.cumulative_quota(
          selection.class_counts(exp.data.train_labels, ctx.labeled, ctx.num_labeled,
                                 exp.dataset.num_classes), budget)  # the labels held: WACV's
      positions, scores = selection.select_top_balanced(
          scored.scores, tie, pool_classes(exp, ctx, view), ctx.num_pool, budget,
          exp.dataset.num_classes, quota)
    else:
      positions, scores = selection.select_top(scored.scores, tie, ctx.num_pool, budget)
  return selection.Selection(parallel.to_host(positions),
                             parallel.to_host(scores).astype(np.float32))


def pool_classes(exp: Experiment, ctx: RoundCtx, view: strategies.PoolView) -> Array:
  """Each pool position's class for ``al.class_balance``: its modal predicted label over the
  history when one was recorded (ties: the smallest class), else the final model's argmax."""
  if ctx.history.shape[0]:
    return disp.sharded_pool_modal_labels(ctx.history, exp.dataset.num_classes, exp.mesh)
  return _argmax(view.outputs['probs'])


@jax.jit
def _argmax(probs):
  return jnp.argmax(probs, -1).astype(jnp.int32)


def finish_round(state: ALState, exp: Experiment, ctx: RoundCtx, accuracy: float,
                 chosen: selection.Selection | None, seconds=(0.0, 0.0, 0.0),
                 class_accuracy: np.ndarray | None = None) -> ALState:
  """The state after round ``ctx.round``: its accuracy and, unless it is the last round, the
  queried ids stamped with ``round + 1`` and their provenance."""
  r = ctx.round
  num_labeled = state.num_labeled.copy()
  num_labeled[r] = int(ctx.num_labeled)
  test_acc = state.test_accuracy.copy()
  test_acc[r] = accuracy
  secs = state.seconds.copy()
  secs[r] = seconds
  new = dict(round=np.int32(r + 1), num_labeled=num_labeled, test_accuracy=test_acc,
             seconds=secs)
  if class_accuracy is not None:
    per_class = state.class_accuracy.copy()
    per_class[r] = class_accuracy
    new['class_accuracy'] = per_class
  if chosen is not None:
    new.update(_record_selection(state, exp, ctx, chosen))
  return state.replace(**new)


def needs_query(state: ALState, exp: Experiment, ctx: RoundCtx) -> bool:
  """Whether this round queries (every round but the last, while the pool is not empty)."""
  return ctx.round < exp.cfg.al.rounds and len(ctx.pool_ids) > 0


class RoundHooks:
  """What runs between the steps of :func:`al_round`: nothing here (an untimed,
  uncheckpointed round). ``experiment.Runner`` overrides them with its checkpoints, NaN policy,
  progress, signals, timing and pool diagnostics."""

  def started(self, ctx: RoundCtx) -> RoundCtx:
    """After :func:`begin_round`: the context to train from (the runner's: a mid-round
    checkpoint's, if there is one)."""
    return ctx

  def trained_epoch(self, ctx: RoundCtx, epoch: int, metrics: train.EpochMetrics) -> None:
    """After each :func:`train_epoch` (``epoch``: the 0-based epoch just trained)."""

  def evaluated(self, ctx: RoundCtx) -> None:
    """After the test evaluation: the model is final."""

  def scored(self, ctx: RoundCtx, scored: Scored) -> None:
    """After :func:`score_pool` and :func:`check_scores` of a round that queries."""

  def finished(self, ctx: RoundCtx, scored: Scored | None,
               chosen: selection.Selection | None) -> None:
    """After :func:`select`; ``scored``: the pool's scores (also of a last model scored for
    ``log.final_diagnostics``), None when the round scored nothing."""

  def seconds(self) -> tuple[float, float, float]:
    """The round's train, score and select seconds, for its state (unmeasured: zeros)."""
    return (0.0, 0.0, 0.0)


NO_HOOKS = RoundHooks()


def al_round(state: ALState, exp: Experiment, hooks: RoundHooks = NO_HOOKS) -> ALState:
  """One whole round: train from scratch, evaluate, score and query (every round but the
  last), with ``hooks`` between the steps (none: untimed and uncheckpointed)."""
  ctx = hooks.started(begin_round(state, exp))
  for epoch in range(ctx.epoch, exp.cfg.train.epochs):
    ctx, metrics = train_epoch(exp, ctx)
    hooks.trained_epoch(ctx, epoch, metrics)
  accuracy, per_class = evaluate(exp, ctx)
  hooks.evaluated(ctx)
  scored = chosen = None
  if needs_query(state, exp, ctx):
    scored = score_pool(exp, ctx)
    check_scores(exp, ctx, scored)  # also waits for the scores
    hooks.scored(ctx, scored)
    chosen = select(exp, ctx, scored)
  elif exp.scores_last_model and len(ctx.pool_ids):  # the last model, no query
    scored = score_pool(exp, ctx)
  hooks.finished(ctx, scored, chosen)
  return finish_round(state, exp, ctx, accuracy, chosen, hooks.seconds(), per_class)


def check_scores(exp: Experiment, ctx: RoundCtx, scored: Scored) -> None:
  """Raises NumericalError when any real pool row's score (or output) is NaN/inf."""
  if scored.num_nonfinite:
    raise NumericalError(f'{scored.num_nonfinite} of {int(ctx.num_pool)} {exp.strategy.name} '
                         'scores are NaN/inf; refusing to select (the model diverged: lower '
                         'train.learning_rate)')


def _record_selection(state: ALState, exp: Experiment, ctx: RoundCtx,
                      chosen: selection.Selection) -> dict:
  """Stamps the queried ids with round ``r + 1`` and keeps their provenance."""
  r = ctx.round
  ids = ctx.pool_ids[chosen.positions]
  labeled_round = state.labeled_round.copy()
  if np.any(labeled_round[ids] >= 0):
    raise AssertionError('selected an already labeled sample')  # internal invariant
  labeled_round[ids] = r + 1
  score, modal, changes = (state.score.copy(), state.modal_label.copy(),
                           state.label_changes.copy())
  score[ids] = chosen.scores
  if ctx.history.shape[0]:
    cols = parallel.to_host(_take_columns(ctx.history, chosen.positions))  # [T, budget] only
    modal[ids] = np.asarray(disp.modal_label(cols, exp.dataset.num_classes))
    changes[ids] = np.asarray(disp.label_changes(cols))
  return dict(labeled_round=labeled_round, score=score, modal_label=modal,
              label_changes=changes)


@jax.jit
def _take_columns(history, positions):
  return jnp.take(history, positions, axis=1)
