"""The configuration schema: every key and its default, and the dotted-key helpers.

Config files in ``configs/`` start from :func:`base_config` (the paper's protocol) and change what
differs, so every experiment has the full set of keys with the right types. ``ml_collections``
rejects unknown keys and wrong types given on the command line; ``config_checks.validate`` rejects
unknown keys added by a config file and values that are out of range, each with a one-line message.
"""

from __future__ import annotations

import ml_collections

from jaxdisp.errors import ConfigError

SOURCES = ('synthetic', 'folder', 'tfds', 'embeddings')
# Keys that never change an experiment's results: they may differ between a run and its
# resumption, and between the runs of one report. Prefixes end with '.'.
NON_RESULT_KEYS = ('log.', 'checkpoint.', 'dataset.cache_dir', 'dataset.data_dir',
                   'dataset.placement', 'num_devices', 'train.eval_batch_size', 'resume_force')


def base_config() -> ml_collections.ConfigDict:
  """The paper's protocol (CIFAR-10, ResNet18, 100 epochs, 5k + 5 x 2.5k labels): the core's
  groups (:func:`core_config`) and the config group of every registered strategy
  (``Strategy.config``, named ``Strategy.group``), a user's from a config file included."""
  from jaxdisp import strategies  # pylint: disable=g-import-not-at-top
  c = core_config()
  for group, defaults in strategies.config_groups().items():
    c[group] = ml_collections.ConfigDict(defaults)
  return c


def core_config() -> ml_collections.ConfigDict:
  """The groups every run has: the run, data and model (:func:`_run_groups`), then training,
  the active-learning loop, checkpoints and logs (:func:`_training_groups`)."""
  c = ml_collections.ConfigDict()
  _run_groups(c)
  _training_groups(c)
  return c


def _run_groups(c: ml_collections.ConfigDict) -> None:
  """The run's own keys, the oracle, the dataset and the model."""
  c.seed = 0
  c.strategy = 'dispersion'  # a registered strategy (jaxdisp.strategies.names())
  c.num_devices = 0  # 0 = all local devices; the data-parallel mesh has this many.
  c.resume_force = False  # resume a workdir even though its saved config differs from this one
  c.oracle = ml_collections.ConfigDict()
  c.oracle.kind = 'simulated'  # simulated (dataset labels) | files (queries/*.csv, human labels)
  # simulated only: each label the oracle gives for a query is a uniformly random other class
  # with this probability; the same answers for the same seed
  c.oracle.noise = 0.0
  # simulated only: the same for the initial labeled set (0 = a clean initial set)
  c.oracle.noise_initial = 0.0

  c.dataset = ml_collections.ConfigDict()
  c.dataset.source = 'tfds'  # tfds | folder | synthetic | embeddings (feature vectors)
  c.dataset.name = 'cifar10'
  # folder source: <root>/<split>/<class>/*.jpg; embeddings: an .npz file or a folder of .npy
  # files (x_train, y_train, x_test, y_test; optional class_names, files)
  c.dataset.root = ''
  c.dataset.data_dir = ''  # tfds source: '' = tfds default
  c.dataset.cache_dir = ''  # decoded folder cache: '' = $JAXDISP_CACHE_DIR or ~/.cache/jaxdisp
  # Where the training images live: replicated (every device holds all; fastest while they
  # fit), sharded (each device 1/devices of them, each process loads only its devices' rows;
  # batches are gathered over the interconnect), auto = sharded when the run has several processes.
  c.dataset.placement = 'auto'
  c.dataset.train_split = 'train'
  c.dataset.test_split = 'test'
  # Long-tailed training split (Cui et al., CVPR 2019): class i keeps
  # floor(n_max * (1 / imbalance) ** (i / (C - 1))) samples, so the largest class is `imbalance`
  # times the smallest; which samples is keyed by dataset.data_seed. 1 = the data as given.
  # The test split stays as given.
  c.dataset.imbalance = 1.0
  # synthetic source only
  c.dataset.num_train = 5000
  c.dataset.num_test = 1000
  c.dataset.num_classes = 10  # synthetic: classes to generate; folder/tfds: 0 = take from the data
  c.dataset.image_size = 32
  c.dataset.data_seed = 0  # synthetic images; also which samples dataset.imbalance keeps

  c.model = ml_collections.ConfigDict()
  # images: resnet18 | small_cnn; feature vectors (dataset.source=embeddings): linear | mlp
  c.model.name = 'resnet18'
  c.model.width = 64  # channels of the first stage (image models)
  c.model.hidden = 512  # mlp: units of each hidden Dense-ReLU layer
  c.model.depth = 1  # mlp: hidden layers
  c.model.dtype = 'float32'  # compute dtype; bfloat16 on TPU/GPU, params stay float32
  c.model.dropout = 0.0  # dropout rate (where: dropout_layers); MC-dropout strategies need > 0
  # Where the dropout layers are: 'head' = before the classifier only (BALD's Monte-Carlo passes
  # are cheap head passes over features computed once); 'network' = also after every backbone
  # stage / block but the last (Monte-Carlo dropout through the whole network: each Monte-Carlo
  # pass is a full forward pass). Needs dropout > 0. The default keeps the models, and every
  # result, of before this key existed.
  c.model.dropout_layers = 'head'


def _training_groups(c: ml_collections.ConfigDict) -> None:
  """Training, the active-learning loop, the prediction history, checkpoints and logs."""
  c.train = ml_collections.ConfigDict()
  c.train.epochs = 100
  c.train.batch_size = 256  # global batch, split over devices
  c.train.learning_rate = 0.02
  c.train.momentum = 0.9
  c.train.nesterov = True
  c.train.weight_decay = 5e-4
  c.train.lr_milestones = (0.6, 0.8)  # fractions of train.epochs (epochs 60 and 80 of 100)
  c.train.lr_gamma = 0.5
  c.train.augment = True  # random crop (pad 4) + horizontal flip
  c.train.eval_batch_size = 1024  # pool scoring and test evaluation
  # Where the optimizer steps of an epoch loop: 'device' = one compiled call per epoch (a
  # fori_loop; best on TPU/GPU), 'host' = one call per step, dispatched asynchronously (XLA:CPU
  # runs conv gradients 10-40x slower inside loops), 'auto' = host for image models on CPU,
  # device elsewhere (vector heads included).
  c.train.step_loop = 'auto'
  # How K > 1 members run (train/members.py): 'vmap' | 'map' (lax.map) | 'loop' | 'auto'
  c.train.member_map = 'auto'

  c.al = ml_collections.ConfigDict()
  c.al.initial_size = 5000
  c.al.budget = 2500  # labels queried per round
  c.al.rounds = 5  # query rounds; rounds + 1 models are trained (round 0 .. rounds)
  c.al.pool_subset = 0  # 0 = score the whole unlabeled pool; else a keyed random subset per round
  # none | modal | modal_batch: a per-class quota over the samples' modal predicted classes
  # (Bengar et al., WACV 2022, as a greedy quota; the shortfall filled by the best remaining
  # scores). modal: their quota, max(0, floor((labeled + budget) / C) - labeled of class c),
  # which balances the labeled set; modal_batch: budget // C per class, whatever is labeled.
  # Scoring strategies only.
  c.al.class_balance = 'none'

  c.dispersion = ml_collections.ConfigDict()
  c.dispersion.record_every = 1  # record pool predictions every k-th epoch
  c.dispersion.record_from_epoch = 0  # skip recording before this epoch (burn-in)
  c.dispersion.mode_last_k = 0  # authors' quirk: take the mode over the last k recorded epochs (0 = all)
  c.dispersion.denominator = 'T'  # 'T' (clean) or 'T+1' (authors' off-by-one)
  c.dispersion.augmented_views = False  # authors' quirk: record predictions on augmented views
  # order among equal scores (dispersion, flips): random (keyed) | entropy | margin of the final
  # model | kcenter: fill the tied group at the boundary by k-center greedy on features
  c.dispersion.tie_break = 'random'
  c.dispersion.record_always = False  # also record the history for baseline strategies

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every_epochs = 5  # in-round training checkpoint interval
  # where the orbax checkpoints go: '' = <workdir>/checkpoints. A multi-host run needs a folder
  # that every process sees (orbax writes each process's shards there): a gs://bucket/path
  # (orbax's native GCS support; launch.sh sets it for gs:// workdirs) or a shared filesystem.
  c.checkpoint.dir = ''

  c.log = ml_collections.ConfigDict()
  c.log.progress_seconds = 30.0  # progress line interval
  # diagnostics/round_<r>.npz: each pool sample's scores (every registered strategy's
  # diagnostics the run has: margin, entropy, dispersion with a history, ...) and whether the
  # round's model got it right -- for jaxdisp.report (the round's one pool pass)
  c.log.pool_diagnostics = True
  # also score the pool after the last round (no query) and write its diagnostics: with
  # al.rounds=0, an uncertainty evaluation of the initial model alone (jaxdisp.report)
  c.log.final_diagnostics = False


def flatten(cfg, prefix: str = '') -> dict:
  """``{'train.epochs': 100, ...}`` for a ConfigDict or a nested dict."""
  out = {}
  for key, value in cfg.items():
    if isinstance(value, (ml_collections.ConfigDict, dict)):
      out.update(flatten(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = value
  return out


def set_key(cfg, key: str, value) -> None:
  """Sets a dotted key (``'train.epochs'``) of ``cfg``; an unknown key raises ConfigError."""
  node, parts = cfg, key.split('.')
  for i, part in enumerate(parts):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      raise ConfigError(f"unknown config key '{'.'.join(parts[:i + 1])}' "
                        '(see jaxdisp/config_lib.py)')
    if i < len(parts) - 1:
      node = node[part]
  if isinstance(node[parts[-1]], ml_collections.ConfigDict):
    raise ConfigError(f"config key '{key}' is a group, not a value")
  node[parts[-1]] = value


def result_neutral(key: str, extra: tuple = ()) -> bool:
  """Whether a flattened key is in :data:`NON_RESULT_KEYS` (or ``extra``)."""
  return key.startswith(NON_RESULT_KEYS + tuple(extra))


# Keys renamed since a version that may have written a workdir: old -> new.
_RENAMED = {'oracle': 'oracle.kind'}


def _upgrade(flat: dict) -> dict:
  out = {_RENAMED.get(k, k): v for k, v in flat.items()}
  if 'oracle.noise' in out and 'oracle.noise_initial' not in out:
    # before oracle.noise_initial, oracle.noise also noised the initial set
    out['oracle.noise_initial'] = out['oracle.noise']
  return out


def config_diff(saved, current) -> list[str]:
  """``['key: old -> new', ...]`` over the keys that change results.

  A key the saved config lacks (it was added to jaxdisp after that run) counts as its default.
  """
  defaults = flatten(base_config())
  a, b = _upgrade(flatten(saved)), flatten(current)
  a = {**{k: v for k, v in defaults.items() if k in b}, **a}
  norm = lambda v: list(v) if isinstance(v, tuple) else v
  return [f'{k}: {a.get(k)!r} -> {b.get(k)!r}' for k in sorted(set(a) | set(b))
          if norm(a.get(k)) != norm(b.get(k)) and not result_neutral(k)]
