"""The strategy plug-in interface: :class:`Strategy`, :class:`PoolView`, the registries.

A strategy declares what it needs and says how to score or select:

* ``records``: per-epoch statistics of the pool recorded during training, all from the same
  pool pass (:data:`RECORDS`): ``'labels'``, each epoch's predicted label, the prediction
  history label dispersion is computed from; ``'prob_moments'``, the running mean and M2 of
  each epoch's top-1 probability; ``'margin_sum'``, the running sum of the top-1 minus top-2
  logit (asking for any record also records the history);
* ``outputs`` / ``labeled_outputs``: per-sample outputs of the round's final model on the pool /
  on the labeled set, computed in one pass (``'features'``, ``'logits'``, ``'probs'``,
  ``'bald'``, or any output registered with :func:`register_output`);
* ``score(view) -> [P]`` (higher = query first; the top ``budget`` are selected with the
  strategy's tie-break), or ``select(view, budget) -> (positions, scores)`` for strategies that
  choose a batch as a whole (k-center greedy);
* ``check_config(cfg)``: raise :class:`~jaxdisp.errors.ConfigError` for configs it cannot run
  (runs when the strategy is the run's);
* ``config``: its config group's defaults, ``cfg.<config_group>`` (the group is named after the
  strategy unless ``config_group`` names another, e.g. one group for a family: one member
  declares it, the others name it). The config schema is the core's groups plus these
  (``config_lib.base_config``), so ``--config.<group>.<key>=...`` works for a strategy registered
  in a config file too. ``check_group(cfg)`` checks the group's values; it runs whenever they can
  affect the run: when the strategy is the run's, or when one of its diagnostics is computed;
* ``diagnostics``: the :class:`PoolScore` values it contributes to the pool diagnostics
  (``diagnostics/round_<r>.npz``: name, display label, direction, what they read, when they are
  available). Each is computed once per round, from the same view the strategy scored; a strategy
  score that is one of them shares the computation (:meth:`PoolView.cached`);
* ``members(cfg) -> K``: models the round trains (default 1). With K > 1 the round trains a deep
  ensemble of K independently initialised models in one program (``train.TrainSetup.members``),
  the pool pass runs every member (``ChunkInputs.member_probs``, ``[K, chunk, C]``), ``'probs'``
  is the members' mean probability and ``'features'`` / ``'logits'`` are member 0's;
* ``aux_head(cfg) -> train.AuxHead | None``: an auxiliary head trained alongside the task model,
  in the same steps (default none). The classifier is built with it on the backbone's stage
  outputs, each step adds ``weight x`` its loss to the task loss (gradient into the backbone
  until ``detach_epoch``), the optimizer and checkpoints carry its parameters, and the pool pass
  gives output functions its eval-mode output (``ChunkInputs.aux``, ``[chunk]``). Learning Loss's
  loss-prediction module is one (``learning_loss.py``). Only for single models (members 1).

A strategy may also train a model of its own at scoring time (an auxiliary model: VAAL's VAE and
discriminator): ``score``/``select`` run after the task model's epochs, un-jitted (jit your own
steps; cache them per static setup so every round reuses one compile), and the view carries the
round's images (``view.data``, ``view.setup``, the index buffers ``view.pool`` /
``view.labeled``). Such a score must be a pure function of the view -- weights and batches keyed
from ``view.key`` -- because nothing it trains is checkpointed: a run killed during it resumes
from the round's last training checkpoint and computes it again, to the same ids. Its time is
the round's ``score`` seconds; NaN/inf in its own losses should raise
:class:`~jaxdisp.errors.NumericalError` with one line (non-finite scores are caught anyway).

The core reads nothing else: it records what ``records`` asks for, runs one pool pass for the
union of ``outputs`` and the outputs of the available diagnostics, hands the strategy a
:class:`PoolView` and selects. A strategy defined in a config file and passed to
:func:`register` runs like a built-in one, its config group and diagnostics included
(``configs/custom_strategy.py``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import Mesh

from jaxdisp import config_lib, dispersion, parallel, train
from jaxdisp.errors import ConfigError
from jaxdisp.strategies.scoring import (  # pylint: disable=unused-import (re-exported)
    TIE_RULES, entropy, least_confidence, neg_margin, tie_key, tie_labeled_outputs, tie_outputs)

Array = jax.Array

# Per-epoch pool statistics the record path can write: the prediction history, and the running
# statistics of ``train.STATS`` (``view.stats``).
RECORDS = ('labels',) + tuple(train.STATS)


@dataclasses.dataclass(frozen=True)
class PoolView:
  """What a strategy sees of a trained round. Arrays are on device, split along the pool like
  the pool buffer; rows past ``num_pool`` (``num_labeled``) are padding."""
  cfg: Any
  mesh: Mesh
  num_classes: int
  history: Array  # int [T, P] predicted labels per recorded epoch (-1 = not recorded); T may be 0
  outputs: dict  # name -> [P, ...] outputs of the final model on the pool
  num_pool: Array
  labeled_outputs: dict  # name -> [L, ...] the same on the labeled set
  num_labeled: Array
  key: Array  # the round's scoring key (random orders, Monte-Carlo draws)
  # running record statistics, float32 [P] each (``train.STATS``): 'prob_mean', 'prob_m2' for
  # records 'prob_moments', 'margin_sum' for 'margin_sum'; over ``num_recorded`` epochs
  stats: dict = dataclasses.field(default_factory=dict)
  # The round's images, for strategies that look at them directly, e.g. to train an auxiliary
  # model at scoring time (VAAL): the dataset on device (``input_pipeline.DeviceData``), the task
  # model's static ``train.TrainSetup`` (mesh, image shape and placement, pool chunk, step loop;
  # ``train.model_inputs(view.setup, view.data, ids)`` gives normalised images inside jit), and
  # the round's index buffers of dataset ids, split over ``data`` (the first ``num_pool`` /
  # ``num_labeled`` rows are real). None where a view is built without them (unit tests).
  data: Any = None
  setup: Any = None
  pool: Array | None = None
  labeled: Array | None = None
  # quantities computed once for this view (the round): name -> [P] (see ``cached``)
  _cache: dict = dataclasses.field(default_factory=dict, init=False, repr=False, compare=False)

  @property
  def capacity(self) -> int:
    return self.history.shape[1]

  @property
  def num_recorded(self) -> int:
    """T: the epochs the history and the running statistics were recorded at."""
    return self.history.shape[0]

  def cached(self, name: str, compute: Callable[[], Array]) -> Array:
    """``compute()``, computed once for this view: the strategy's score and the pool
    diagnostics of the round read the same array (``name`` says what it is, e.g. 'entropy')."""
    if name not in self._cache:
      self._cache[name] = compute()
    return self._cache[name]

  def label_dispersion(self) -> Array:
    """``1 - f_x / T`` of every pool position, with the config's ``dispersion.*`` options
    (computed where each device holds its columns, no communication; once per view)."""
    d = self.cfg.dispersion
    return self.cached('dispersion', lambda: dispersion.sharded_label_dispersion(
        self.history, self.num_classes, self.mesh, mode_last_k=d.mode_last_k,
        denominator=d.denominator))


def _no_check(cfg) -> None:
  del cfg


def _random_tie(cfg) -> str:
  del cfg
  return 'random'


def _one_member(cfg) -> int:
  del cfg
  return 1


def _no_aux_head(cfg) -> None:
  del cfg
  return None


def _always(cfg) -> bool:
  del cfg
  return True


@dataclasses.dataclass(frozen=True)
class PoolScore:
  """A per-sample score of the pool that a strategy contributes to the pool diagnostics
  (``diagnostics/round_<r>.npz``, read by ``jaxdisp.report``)."""
  name: str  # its array in the diagnostics file, e.g. 'least_confidence'
  label: str  # its display name, e.g. 'least confidence'
  highest: bool  # True: the highest values are the most uncertain (False: the lowest, margin)
  compute: Callable[['PoolView'], Array]  # the round's view -> float [P] on device
  outputs: tuple = ()  # the pool outputs it reads (computed in the round's one pool pass)
  # the per-epoch records it reads (RECORDS): it is available only in runs that keep them (a
  # strategy's ``records`` or dispersion.record_always); nothing is recorded for it alone
  records: tuple = ()
  available: Callable[[Any], bool] = _always  # cfg -> whether the run has it (BALD: dropout > 0)

  def __post_init__(self):
    unknown = [r for r in self.records if r not in RECORDS]
    if unknown:
      raise ValueError(f'pool score {self.name!r}: unknown records {unknown}; known: {RECORDS}')


# Arrays of the diagnostics file that are not scores.
RESERVED_SCORE_NAMES = ('ids', 'correct', 'score_names', 'score_labels', 'score_highest')


@dataclasses.dataclass(frozen=True)
class Strategy:
  """An acquisition strategy (see the module docstring)."""
  name: str
  summary: str  # one line: what is queried
  reference: str = ''  # the paper, and how it was adapted
  cost: str = '?'  # pool passes per round, e.g. '1 (after training)'; {cfg.key} is filled in
  records: tuple = ()
  outputs: tuple = ()
  labeled_outputs: tuple = ()
  score: Callable[[PoolView], Array] | None = None
  select: Callable[[PoolView, int], tuple[Array, Array]] | None = None
  tie_break: Callable[[Any], str] = _random_tie  # cfg -> one of TIE_RULES
  check_config: Callable[[Any], None] = _no_check
  needs_dropout: bool = False  # Monte-Carlo dropout: needs model.dropout > 0 (sweep checks it)
  members: Callable[[Any], int] = _one_member  # cfg -> models trained per round (ensemble if > 1)
  # cfg -> an auxiliary head trained alongside the task model (train.AuxHead), or None
  aux_head: Callable[[Any], train.AuxHead | None] = _no_aux_head
  config: ml_collections.ConfigDict | dict | None = None  # its group's defaults (kept frozen)
  config_group: str = ''  # the group's name: '' = the strategy's name
  check_group: Callable[[Any], None] = _no_check  # cfg -> ConfigError for bad group values
  diagnostics: tuple = ()  # PoolScore values it adds to the pool diagnostics

  def __post_init__(self):
    if (self.score is None) == (self.select is None):
      raise ValueError(f'strategy {self.name!r}: give exactly one of score= or select=')
    unknown = [r for r in self.records if r not in RECORDS]
    if unknown:
      raise ValueError(f'strategy {self.name!r}: unknown records {unknown}; known: {RECORDS}')
    if self.config is not None and not isinstance(self.config, ml_collections.FrozenConfigDict):
      object.__setattr__(self, 'config', ml_collections.FrozenConfigDict(self.config))
    if not all(isinstance(d, PoolScore) for d in self.diagnostics):
      raise ValueError(f'strategy {self.name!r}: diagnostics must be PoolScore values')

  @property
  def group(self) -> str:
    """The name of its config group (``cfg.<group>``)."""
    return self.config_group or self.name


_STRATEGIES: dict[str, Strategy] = {}
_BUILTIN: set[str] = set()


def register(strategy: Strategy, *, replace: bool = False, builtin: bool = False) -> Strategy:
  """Adds ``strategy`` under its name. Registering a name again replaces the earlier entry
  (config files may be executed more than once), except a built-in one without ``replace``."""
  if strategy.name in _BUILTIN and not replace:
    raise ValueError(f'strategy {strategy.name!r} is built in; pass replace=True to override it')
  reads = strategy.outputs + strategy.labeled_outputs + tuple(
      o for d in strategy.diagnostics for o in d.outputs)
  unknown = [o for o in reads if o not in _OUTPUTS]
  if unknown:
    raise ValueError(f'strategy {strategy.name!r}: unknown outputs {unknown}; register them '
                     f'with register_output (known: {sorted(_OUTPUTS)})')
  _check_group_and_scores(strategy)
  _STRATEGIES[strategy.name] = strategy
  if builtin:
    _BUILTIN.add(strategy.name)
  return strategy


def _check_group_and_scores(strategy: Strategy) -> None:
  """A group is declared once and is not a core one; a diagnostic name is taken once."""
  others = [s for n, s in _STRATEGIES.items() if n != strategy.name]
  if strategy.config is not None:
    if strategy.group in config_lib.core_config():
      raise ValueError(f'strategy {strategy.name!r}: config group {strategy.group!r} is a core '
                       'group of jaxdisp.config_lib')
    owner = next((s.name for s in others if s.config is not None and s.group == strategy.group),
                 None)
    if owner:
      raise ValueError(f'strategy {strategy.name!r}: config group {strategy.group!r} is '
                       f'declared by strategy {owner!r} (name it with config_group, no config)')
  taken = {d.name: s.name for s in others for d in s.diagnostics}
  for d in strategy.diagnostics:
    if d.name in RESERVED_SCORE_NAMES or d.name in taken:
      raise ValueError(f'strategy {strategy.name!r}: diagnostic {d.name!r} is taken (by '
                       f'{taken.get(d.name, "the diagnostics file")})')


def unregister(name: str) -> None:
  """Removes a strategy that is not built in (tests, notebooks)."""
  if name in _BUILTIN:
    raise ValueError(f'strategy {name!r} is built in')
  _STRATEGIES.pop(name, None)


def get(name: str) -> Strategy:
  if name not in _STRATEGIES:
    raise ConfigError(f'strategy={name!r} is not one of {list(_STRATEGIES)}')
  return _STRATEGIES[name]


def names() -> tuple[str, ...]:
  """Registered strategies, built-ins first in their documented order."""
  return tuple(_STRATEGIES)


def builtin_names() -> tuple[str, ...]:
  """The strategies that ship with jaxdisp, in their documented order."""
  return tuple(n for n in _STRATEGIES if n in _BUILTIN)


def config_groups() -> dict[str, ml_collections.FrozenConfigDict]:
  """The registered strategies' config groups (name -> defaults), in registry order."""
  return {s.group: s.config for s in _STRATEGIES.values() if s.config is not None}


def pool_scores() -> tuple[PoolScore, ...]:
  """Every registered strategy's diagnostics, in registry order (the report's table order)."""
  return tuple(d for s in _STRATEGIES.values() for d in s.diagnostics)


def check_groups(cfg) -> None:
  """Runs ``check_group`` of every strategy whose group can affect this run: the run's
  strategy's group, and the group of every strategy one of whose diagnostics is computed
  (``log.pool_diagnostics`` and the score's ``available(cfg)``)."""
  in_use = {get(cfg.strategy).group}
  if cfg.log.pool_diagnostics:
    in_use |= {s.group for s in _STRATEGIES.values()
               if any(d.available(cfg) for d in s.diagnostics)}
  done = set()
  for s in _STRATEGIES.values():
    if s.group in in_use and s.check_group not in done:
      done.add(s.check_group)
      s.check_group(cfg)


def needs_dropout_check(name: str) -> Callable[[Any], None]:
  """A ``check_config`` that refuses configs without Monte-Carlo dropout."""

  def check(cfg) -> None:
    if cfg.model.dropout <= 0:
      raise ConfigError(f'strategy={name} needs Monte-Carlo dropout: set '
                        '--config.model.dropout to e.g. 0.3')
  return check


# ---- pool outputs -------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ChunkInputs:
  """What an output function sees for one chunk of rows (inside jit)."""
  setup: train.TrainSetup
  variables: dict
  features: Array  # [chunk, F] penultimate features, eval mode, float32
  idx: Array  # [chunk] dataset ids
  key: Array
  cfg: Any
  # [chunk, H, W, C] the normalised images, or [chunk, D] vectors (for full forward passes)
  inputs: Array | None = None
  member_probs: Array | None = None  # [K, chunk, C] every member's probabilities (ensembles only)
  aux: Array | None = None  # [chunk] the auxiliary head's output, eval mode (Strategy.aux_head)

  def logits(self, deterministic: bool = True, rngs=None) -> Array:
    return self.setup.model.apply(self.variables, self.features, method='classify',
                                  deterministic=deterministic, rngs=rngs)


_OUTPUTS: dict[str, Callable[[ChunkInputs], Array]] = {}


def register_output(name: str, fn: Callable[[ChunkInputs], Array]) -> None:
  """Makes ``name`` available to ``Strategy.outputs``: ``fn`` maps a :class:`ChunkInputs` to
  per-row values ``[chunk, ...]``."""
  _OUTPUTS[name] = fn


register_output('features', lambda c: c.features)
register_output('logits', lambda c: c.logits())


def _probs(c: ChunkInputs) -> Array:
  """The model's probabilities; an ensemble's: the mean over its members."""
  if c.member_probs is not None:
    return c.member_probs.mean(0)
  return jax.nn.softmax(c.setup.model.apply(c.variables, c.features, method='classify'))


register_output('probs', _probs)


def pool_outputs(setup: train.TrainSetup, cfg, state: train.TrainState, data, idx: Array,
                 num: Array, key: Array, outputs: tuple[str, ...]) -> dict:
  """The named ``outputs`` of the final model on the rows ``idx`` (one forward pass; eval mode).

  Jit it with ``outputs`` static (the caller closes over ``setup`` and ``cfg``). An ensemble
  (``setup.members > 1``, ``state`` stacked) runs every member on each chunk
  (``train.over_members``: vmap or lax.map): one forward pass per member, never more than ``[K,
  chunk, C]`` probabilities at a time. A model with an auxiliary head (``setup.aux``) gives its
  output in the same forward pass (``ChunkInputs.aux``).
  """
  v = train.variables(state)
  ensemble = setup.members > 1
  members_v = v
  if ensemble:  # features, logits and dropout outputs are member 0's
    v = jax.tree.map(lambda a: a[0], members_v)

  def per_chunk(chunk_idx, valid):
    del valid
    x = train.model_inputs(setup, data, chunk_idx)
    probs = aux = None
    if ensemble:
      def member(vk):
        f = setup.model.apply(vk, x, method='embed')
        return f, setup.model.apply(vk, f, method='classify')
      feats_k, logits_k = train.over_members(setup, member, members_v)  # vmap or lax.map
      feats, probs = feats_k[0], jax.nn.softmax(logits_k.astype(jnp.float32))
    elif setup.aux is not None:
      feats, aux = setup.model.apply(v, x, method='embed_aux')
    else:
      feats = setup.model.apply(v, x, method='embed')
    inputs = ChunkInputs(setup, v, feats, chunk_idx, key, cfg, x, probs, aux)
    return {name: _OUTPUTS[name](inputs) for name in outputs}

  return parallel.map_in_chunks(per_chunk, idx, num, setup.chunk, setup.mesh)
