"""What the report reads: each run's ``results.json`` and its ``diagnostics/round_<r>.npz`` files.

A run is one experiment folder under the sweep's workdir. Runs are ordered by strategy (the
registry's order, built-ins first, then others by name) and seed. A diagnostics file holds
``ids`` (int64), ``correct`` (bool) and one float ``[P]`` array per pool score under the
score's name, with its table order, display names and directions in ``score_names``,
``score_labels`` and ``score_highest`` (True: the highest values are the most uncertain). A file
written before it recorded its scores has every float array as a score, labelled by its key
(``_`` as a space), the highest most uncertain except ``margin`` and ``margin_dynamics``.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import re

import numpy as np

from jaxdisp.config_lib import flatten
from jaxdisp.errors import ReportError

REQUIRED_DIAGNOSTICS = ('ids', 'correct')
SCORE_METADATA = ('score_names', 'score_labels', 'score_highest')
# files written before the scores were recorded in them: the scores whose lowest values are the
# most uncertain (every other float array: the highest)
_LEGACY_LOWEST = ('margin', 'margin_dynamics')
_DIAGNOSTICS_FILE = re.compile(r'round_(\d+)\.npz')


@dataclasses.dataclass
class Run:
  name: str  # the run's folder name under W
  path: str
  strategy: str
  seed: int
  config: dict
  labeled: list[int]  # per completed round
  accuracy: list[float]  # per completed round, percent
  seconds: list[dict] = dataclasses.field(default_factory=list)  # per completed round
  balanced: list = dataclasses.field(default_factory=list)  # per round, percent or None (older)


def _read_run(path: str) -> Run | None:
  """The run of one ``results.json``; None when it has no completed round."""
  try:
    with open(path) as f:
      doc = json.load(f)
    cfg = doc['config']
    strategy, seed = str(cfg['strategy']), int(cfg['seed'])
    rounds = sorted(doc['rounds'], key=lambda r: r['round'])
    if not rounds:
      return None
    labeled = [int(r['num_labeled']) for r in rounds]
    accuracy = [100.0 * float(r['test_accuracy']) for r in rounds]
    seconds = [dict(r.get('seconds') or {}) for r in rounds]
    balanced = [None if r.get('balanced_accuracy') is None
                else 100.0 * float(r['balanced_accuracy']) for r in rounds]
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise ReportError(f'cannot read {path}: {type(e).__name__}: {e}') from None
  run_dir = os.path.dirname(path)
  return Run(os.path.basename(run_dir), run_dir, strategy, seed, cfg, labeled, accuracy,
             seconds, balanced)


def load_runs(workdir: str) -> list[Run]:
  """Every ``workdir/*/results.json``, sorted by (strategy order, seed)."""
  if not os.path.isdir(workdir):
    raise ReportError(f'{workdir} is not a folder')
  runs, seen = [], {}
  for path in sorted(glob.glob(os.path.join(workdir, '*', 'results.json'))):
    run = _read_run(path)
    if run is None:
      continue
    key = run.strategy, run.seed
    if key in seen:
      raise ReportError(f'runs {seen[key]} and {run.name} are both strategy={run.strategy} '
                        f'seed={run.seed}; move one of them out of {workdir}')
    seen[key] = run.name
    runs.append(run)
  if not runs:
    hint = (f' ({workdir} is one run: pass the folder that holds the runs)'
            if os.path.exists(os.path.join(workdir, 'results.json')) else '')
    raise ReportError(f'no {os.path.join(workdir, "*", "results.json")} found{hint}')
  return sorted(runs, key=lambda r: (strategy_rank(r.strategy), r.seed))


def strategy_rank(s: str):
  """Registered strategies in registry order (built-ins first), then others by name."""
  from jaxdisp import strategies as registry  # pylint: disable=g-import-not-at-top
  known = registry.names()
  return (known.index(s), '') if s in known else (len(known), s)


def strategies(runs) -> list[str]:
  return sorted({r.strategy for r in runs}, key=strategy_rank)


def runs_by_strategy(runs) -> dict[str, list[Run]]:
  """``{strategy: its runs}`` in report order."""
  groups: dict[str, list[Run]] = {}
  for r in runs:
    groups.setdefault(r.strategy, []).append(r)
  return {s: groups[s] for s in strategies(runs)}


def mismatched_model_keys(runs, allow_mixed: bool = False) -> list[str]:
  """The ``model.*`` keys whose values differ between ``runs`` (a key a run's config lacks --
  written before the key existed -- counts as its default). Raises ReportError when any do,
  unless ``allow_mixed``: a table of strategies run on different networks (say, dropout for
  one strategy only) compares networks as much as strategies."""
  from jaxdisp.config_lib import base_config  # pylint: disable=g-import-not-at-top
  defaults = {k: v for k, v in flatten(base_config()).items() if k.startswith('model.')}
  values: dict = {}  # key -> {json value: [run names]}
  for r in runs:
    flat = {**defaults, **{k: v for k, v in flatten(r.config).items() if k.startswith('model.')}}
    for k, v in flat.items():
      values.setdefault(k, {}).setdefault(json.dumps(v, sort_keys=True, default=str),
                                          []).append(r.name)
  differ = sorted(k for k, by_value in values.items() if len(by_value) > 1)
  if differ and not allow_mixed:
    detail = '; '.join(
        f'{k}: ' + ', '.join(f'{v} ({", ".join(names[:2])}{", ..." if len(names) > 2 else ""})'
                             for v, names in values[k].items())
        for k in differ)
    raise ReportError(f'the runs use different models ({detail}): every strategy of one table '
                      'needs the same model.* keys; rerun them with the same keys, or pass '
                      '--allow-mixed-models')
  return differ


# ----------------------------------------------------------------------------- diagnostics

@dataclasses.dataclass(frozen=True)
class Score:
  """One pool score of a diagnostics file."""
  name: str  # its array's key
  label: str  # its display name
  highest: bool  # True: the highest values are the most uncertain


@dataclasses.dataclass
class Diagnostics:
  """One ``round_<r>.npz``: the round's model on the pool it scored."""
  round: int
  ids: np.ndarray  # int [P]
  correct: np.ndarray  # bool [P]: the model's prediction is the label
  scores: list[Score]  # in table order
  values: dict[str, np.ndarray]  # score name -> [P] as stored


def diagnostics_files(run: Run) -> list[str]:
  """The run's ``diagnostics/round_<r>.npz`` files in round order."""
  files = [f for f in glob.glob(os.path.join(run.path, 'diagnostics', 'round_*.npz'))
           if _DIAGNOSTICS_FILE.fullmatch(os.path.basename(f))]
  return sorted(files, key=lambda f: int(_DIAGNOSTICS_FILE.fullmatch(os.path.basename(f))[1]))


def _recorded_scores(arrays: dict) -> list[Score]:
  """The scores a file lists in its metadata, or (a file without) every float array."""
  present = [k for k in SCORE_METADATA if k in arrays]
  if not present:  # written before the files recorded their scores
    return [Score(k, k.replace('_', ' '), k not in _LEGACY_LOWEST) for k, v in arrays.items()
            if k not in REQUIRED_DIAGNOSTICS and np.issubdtype(v.dtype, np.floating)]
  if len(present) < len(SCORE_METADATA):
    missing = [k for k in SCORE_METADATA if k not in arrays]
    raise ValueError(f'missing array(s) {", ".join(missing)}')
  names, labels, highest = (arrays[k] for k in SCORE_METADATA)
  if names.ndim != 1 or labels.shape != names.shape or highest.shape != names.shape:
    raise ValueError(f'{", ".join(SCORE_METADATA)} must be 1-D of one length')
  missing = [str(n) for n in names if str(n) not in arrays]
  if missing:
    raise ValueError(f'missing array(s) {", ".join(missing)}')
  return [Score(str(n), str(l), bool(h)) for n, l, h in zip(names, labels, highest)]


def read_diagnostics(path: str) -> Diagnostics:
  """One diagnostics file, checked; ValueError (or a zip/npz error) when it cannot be used."""
  with np.load(path) as z:
    arrays = {k: np.asarray(z[k]) for k in z.files}
  missing = [k for k in REQUIRED_DIAGNOSTICS if k not in arrays]
  if missing:
    raise ValueError(f'missing array(s) {", ".join(missing)}')
  scores = _recorded_scores(arrays)
  size = len(arrays['ids'])
  bad = [k for k in REQUIRED_DIAGNOSTICS + tuple(s.name for s in scores)
         if arrays[k].shape != (size,)]
  if bad:
    raise ValueError(f'array(s) {", ".join(bad)} do not have the shape of ids ({size},)')
  if size == 0:
    raise ValueError('empty pool')
  return Diagnostics(int(_DIAGNOSTICS_FILE.fullmatch(os.path.basename(path))[1]),
                     arrays['ids'], arrays['correct'].astype(bool), scores,
                     {s.name: arrays[s.name] for s in scores})
