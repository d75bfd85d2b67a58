"""The checks a config must pass, each failure one line (``ConfigError``).

:func:`validate` checks a config on its own: every key of ``config_lib.base_config`` and no other,
each of its default's type, and every value in range. The core's groups are checked here; a
strategy's group by the strategy (``Strategy.check_group``), and what the run's strategy needs of
the rest by ``Strategy.check_config``. :func:`validate_against_data` adds the checks that need the
dataset (class count, whether the label budget fits the pool).
"""

from __future__ import annotations

from jaxdisp.config_lib import SOURCES, base_config, flatten
from jaxdisp.errors import ConfigError


def validate(cfg) -> None:
  """Raises ConfigError (one line) for unknown keys or out-of-range values.

  The core's groups are checked here; a strategy's group by the strategy
  (``Strategy.check_group``, whenever the group can affect the run), and what the run's strategy
  needs of the rest by ``Strategy.check_config``.
  """
  from jaxdisp import strategies  # pylint: disable=g-import-not-at-top
  _check_keys_and_types(cfg)
  _need(cfg.strategy in strategies.names(),
        f'strategy={cfg.strategy!r} is not one of {list(strategies.names())}')
  _check_run(cfg)
  _check_training(cfg)
  _check_strategy(cfg)
  _check_recording(cfg)  # what its per-epoch records need


_MAX_SEED = 2**32 - 1  # jax.random.PRNGKey keeps 32 bits of it (without jax_enable_x64)


def _need(cond, msg: str) -> None:
  if not cond:
    raise ConfigError(msg)


def _check_keys_and_types(cfg) -> None:
  """Every key of :func:`base_config`, no other, each of its default's type."""
  reference = flatten(base_config())
  given = flatten(cfg)
  unknown = sorted(set(given) - set(reference))
  if unknown:
    raise ConfigError(f'unknown config key(s): {", ".join(unknown)}')
  missing = sorted(set(reference) - set(given))
  if missing:
    raise ConfigError(f'config is missing key(s): {", ".join(missing)} '
                      '(start config files from jaxdisp.config_lib.base_config())')
  for name, value in given.items():
    want = type(reference[name])
    ok = isinstance(value, want) or (want is float and isinstance(value, int)) or (
        want is tuple and isinstance(value, list))
    if not ok or (want is int and isinstance(value, bool)):
      raise ConfigError(f'{name}={value!r} should be of type {want.__name__}')
    if want is tuple:
      _check_elements(name, value, reference[name])


def _check_elements(name: str, value, default) -> None:
  wrong = wrong_element(value, default)  # as --config.KEY=... reads them (jaxdisp.cli)
  if wrong:
    raise ConfigError(f'{name}={tuple(value)!r}: its elements must be {wrong[0]}, got {wrong[1]!r}')


def wrong_element(value, default):
  """(allowed types, first wrong element) or None: a tuple key's elements are of its default's
  types (an int where floats are, never a bool)."""
  kinds = {type(v) for v in default}
  if float in kinds:
    kinds.add(int)
  wrong = [v for v in value if kinds and type(v) not in kinds]
  return (' or '.join(sorted(k.__name__ for k in kinds)), wrong[0]) if wrong else None


def _check_run(cfg) -> None:
  """The oracle, the dataset, the devices and the model."""
  check = _need
  check(0 <= cfg.seed <= _MAX_SEED,
        f'seed={cfg.seed} must be in [0, {_MAX_SEED}] (the random key keeps 32 bits of it: a '
        "negative or larger seed would repeat another seed's run)")
  check(cfg.oracle.kind in ('simulated', 'files'),
        f"oracle.kind={cfg.oracle.kind!r} must be 'simulated' or 'files'")
  check(0.0 <= cfg.oracle.noise < 1.0,
        f'oracle.noise={cfg.oracle.noise} must be in [0, 1) (the probability of a wrong answer)')
  check(0.0 <= cfg.oracle.noise_initial < 1.0,
        f'oracle.noise_initial={cfg.oracle.noise_initial} must be in [0, 1) (the probability of '
        'a wrong initial label)')
  check((cfg.oracle.noise == 0.0 and cfg.oracle.noise_initial == 0.0)
        or cfg.oracle.kind == 'simulated',
        'oracle.noise and oracle.noise_initial simulate annotator mistakes; with '
        "oracle.kind=files the labels are people's: set both to 0")
  check(cfg.dataset.num_classes >= 0,
        f'dataset.num_classes={cfg.dataset.num_classes} must be >= 0 (0 = from the data)')
  check(cfg.dataset.source in SOURCES,
        f'dataset.source={cfg.dataset.source!r} is not one of {list(SOURCES)}')
  imbalance = cfg.dataset.imbalance
  check(imbalance >= 1.0 and imbalance != float('inf'),  # NaN fails >= as well
        f'dataset.imbalance={imbalance} must be a finite number >= 1 (1 = the data as given, '
        '10 = the largest class 10 times the smallest)')
  check(cfg.dataset.data_seed >= 0, f'dataset.data_seed={cfg.dataset.data_seed} must be >= 0')
  check(cfg.dataset.placement in ('auto', 'replicated', 'sharded'),
        f"dataset.placement={cfg.dataset.placement!r} must be 'auto', 'replicated' or 'sharded'")
  check(cfg.dataset.source != 'folder' or cfg.dataset.root,
        'dataset.source=folder needs --config.dataset.root=<folder with train/ and test/>')
  _check_inputs(cfg)
  check(cfg.num_devices >= 0, f'num_devices={cfg.num_devices} must be >= 0 (0 = all)')
  check(cfg.model.width > 0, f'model.width={cfg.model.width} must be positive')
  check(0.0 <= cfg.model.dropout < 1.0, f'model.dropout={cfg.model.dropout} must be in [0, 1)')
  check(cfg.model.dropout_layers in ('head', 'network'),
        f"model.dropout_layers={cfg.model.dropout_layers!r} must be 'head' or 'network'")
  check(cfg.model.dropout_layers == 'head' or cfg.model.dropout > 0,
        f"model.dropout_layers='network' needs model.dropout > 0 (got {cfg.model.dropout}): set "
        '--config.model.dropout to e.g. 0.3')


def _check_inputs(cfg) -> None:
  """The model, and the augmentation, fit the source's inputs: images or feature vectors."""
  from jaxdisp import models  # pylint: disable=g-import-not-at-top
  from jaxdisp.data import embeddings  # pylint: disable=g-import-not-at-top
  models.check_config(cfg.model, vectors=cfg.dataset.source == 'embeddings',
                      source=f'dataset.source={cfg.dataset.source}')
  if cfg.dataset.source == 'embeddings':
    embeddings.check_config(cfg)


def _check_training(cfg) -> None:
  """Training, the active-learning loop, the prediction history and checkpoints."""
  from jaxdisp import strategies  # pylint: disable=g-import-not-at-top
  check, t, a, d = _need, cfg.train, cfg.al, cfg.dispersion
  check(t.epochs > 0, f'train.epochs={t.epochs} must be positive')
  check(t.batch_size > 0, f'train.batch_size={t.batch_size} must be positive')
  check(t.eval_batch_size > 0, f'train.eval_batch_size={t.eval_batch_size} must be positive')
  check(t.step_loop in ('auto', 'device', 'host'),
        f"train.step_loop={t.step_loop!r} must be 'auto', 'device' or 'host'")
  check(t.member_map in ('auto', 'vmap', 'map', 'loop'),
        f"train.member_map={t.member_map!r} must be 'auto', 'vmap', 'map' or 'loop'")
  check(t.learning_rate > 0, f'train.learning_rate={t.learning_rate} must be positive')
  check(0.0 <= t.momentum < 1.0, f'train.momentum={t.momentum} must be in [0, 1)')
  check(t.weight_decay >= 0, f'train.weight_decay={t.weight_decay} must be >= 0')
  check(all(0.0 < m <= 1.0 for m in t.lr_milestones),
        f'train.lr_milestones={tuple(t.lr_milestones)} must be fractions of train.epochs in (0, 1]')
  check(t.lr_gamma > 0, f'train.lr_gamma={t.lr_gamma} must be positive')
  check(a.initial_size > 0, f'al.initial_size={a.initial_size} must be positive')
  check(a.budget > 0, f'al.budget={a.budget} must be positive')
  check(a.rounds >= 0, f'al.rounds={a.rounds} must be >= 0')
  check(a.pool_subset >= 0, f'al.pool_subset={a.pool_subset} must be >= 0 (0 = whole pool)')
  check(a.pool_subset == 0 or a.pool_subset >= a.budget,
        f'al.pool_subset={a.pool_subset} is smaller than al.budget={a.budget}')
  check(d.record_every > 0, f'dispersion.record_every={d.record_every} must be positive')
  check(0 <= d.record_from_epoch < t.epochs,
        f'dispersion.record_from_epoch={d.record_from_epoch} must be in [0, train.epochs={t.epochs})')
  check(d.mode_last_k >= 0, f'dispersion.mode_last_k={d.mode_last_k} must be >= 0 (0 = all)')
  check(d.denominator in ('T', 'T+1'), f"dispersion.denominator={d.denominator!r} must be 'T' or 'T+1'")
  check(d.tie_break in strategies.TIE_RULES,
        f"dispersion.tie_break={d.tie_break!r} must be 'random', 'entropy', 'margin' or "
        "'kcenter'")
  check(a.class_balance in ('none', 'modal', 'modal_batch'),
        f"al.class_balance={a.class_balance!r} must be 'none', 'modal' or 'modal_batch'")
  check(cfg.checkpoint.every_epochs > 0,
        f'checkpoint.every_epochs={cfg.checkpoint.every_epochs} must be positive')


def _check_strategy(cfg) -> None:
  """The strategies' groups that can affect the run, the run's strategy's tie rule, what it
  needs (``check_config``) and whether it can be class-balanced."""
  from jaxdisp import strategies  # pylint: disable=g-import-not-at-top
  strategies.check_groups(cfg)
  strategy = strategies.get(cfg.strategy)
  rule = strategy.tie_break(cfg)
  _need(rule in strategies.TIE_RULES, f'strategy={cfg.strategy}: its tie_break gives {rule!r}, '
        f'not one of {list(strategies.TIE_RULES)}')
  balance = cfg.al.class_balance
  if balance != 'none':
    _need(strategy.score is not None,
          f'al.class_balance={balance} needs a scoring strategy; strategy={cfg.strategy} '
          'chooses its batch as a whole')
    _need(rule != 'kcenter', f'al.class_balance={balance} cannot be combined with '
          'dispersion.tie_break=kcenter (use one of the two)')
  strategy.check_config(cfg)  # what the strategy itself needs


def recorded_epochs(cfg) -> int:
  """Epochs whose pool predictions enter the history (``T``; 0 when no history is kept).

  Mirrors ``train.Recording``: the history is kept for strategies that record the pool
  (``Strategy.records``, e.g. dispersion) or with ``dispersion.record_always``, one row per epoch
  in ``range(record_from_epoch, train.epochs, record_every)``.
  """
  from jaxdisp import strategies  # pylint: disable=g-import-not-at-top
  d = cfg.dispersion
  if not (strategies.get(cfg.strategy).records or d.record_always):
    return 0
  return len(range(d.record_from_epoch, cfg.train.epochs, max(d.record_every, 1)))


def _check_recording(cfg) -> None:
  """Label dispersion needs >= 2 recorded epochs (with one, every sample scores the same and the
  query is the tie-break order), and ``mode_last_k`` can only look at epochs that are recorded."""
  from jaxdisp import strategies  # pylint: disable=g-import-not-at-top
  if 'labels' not in strategies.get(cfg.strategy).records:  # no prediction history needed
    return
  d, t = cfg.dispersion, recorded_epochs(cfg)
  how = (f'train.epochs={cfg.train.epochs}, dispersion.record_from_epoch={d.record_from_epoch}, '
         f'dispersion.record_every={d.record_every}')
  if t < 2:
    raise ConfigError(f'strategy={cfg.strategy} would record the pool\'s predictions in {t} '
                      f'epoch(s) ({how}); label dispersion needs at least 2 (with 1, every sample '
                      'scores the same): lower dispersion.record_every or record_from_epoch, or '
                      'raise train.epochs')
  if d.mode_last_k > t:
    raise ConfigError(f'dispersion.mode_last_k={d.mode_last_k} exceeds the {t} recorded epochs '
                      f'({how}): lower it (0 = all recorded epochs)')


def validate_against_data(cfg, num_train: int, num_classes: int) -> None:
  """Checks that need the dataset: class count, and the label budget must fit the pool."""
  expected = cfg.dataset.num_classes
  if expected and expected != num_classes:
    raise ConfigError(f'dataset.num_classes={expected} but the {cfg.dataset.source} dataset '
                      f'{cfg.dataset.name!r} has {num_classes} classes (0 = take it from the data)')
  a = cfg.al
  needed = a.initial_size + a.budget * a.rounds
  if a.initial_size >= num_train:
    raise ConfigError(f'al.initial_size={a.initial_size} leaves no unlabeled pool in a training '
                      f'set of {num_train} samples')
  if needed > num_train:
    raise ConfigError(f'al.initial_size + al.budget * al.rounds = {needed} exceeds the '
                      f'{num_train} training samples: lower al.budget or al.rounds')
  if num_classes < 2:
    raise ConfigError(f'the dataset has {num_classes} class(es); need at least 2')
