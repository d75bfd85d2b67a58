r"""Aggregates a sweep's runs into one report: does the strategy beat random, with error bars?

  python -m jaxdisp.report W                 # writes W/report/{report.md, *.png}
  python -m jaxdisp.report W --out docs/results

Reads every ``W/*/results.json`` (one experiment each, as written by ``jaxdisp.main`` /
``jaxdisp.sweep``), groups the runs by ``config.strategy`` (the seeds are ``config.seed``) and
writes

* ``report.md``: test accuracy (%) per strategy per labeled count, mean ± sample std
  (``ddof=1``) over seeds; the area under each learning curve; each strategy's paired difference
  against random with a 95% t-interval; the labels each strategy saves against random; the
  uncertainty evaluation of every pool score (AUROC, AUPR, top-k% accuracy) and each strategy's
  cost;
* ``learning_curves.png``: the mean curve of each strategy with a shaded ±std band;
* ``dispersion_hist_<strategy>.png``: the distribution of dispersion over the scored pool, one
  panel per round (only for runs whose ``diagnostics/round_<r>.npz`` hold dispersion values).

**Area under the learning curve (AULC).** Per run: the trapezoid of test accuracy (%) against
the number of labels over ``[a, b]``, divided by ``b - a``, where ``a`` is the initial labeled
count (the initial point is included) and ``b`` the largest count every run of the report reached
(a run that went further is cut at ``b``, linearly interpolated where ``b`` falls between two of
its rounds). Then mean ± sample std over the seeds.

**Paired differences.** The same seed gives every strategy the same initial set and round-0
model, so strategy and random are compared seed by seed: ``d_seed = strategy - random`` (AULC,
and accuracy at ``b``), over the seeds both have; the mean of ``d`` with the 95% Student t
interval ``mean ± t(0.975, n - 1) * s / sqrt(n)`` (``s`` the sample std of ``d``).

**Labels saved.** Random's target is its final mean accuracy (the mean at its largest labeled
count N). A strategy's mean curve (means joined by straight lines, in order of labeled count) is
scanned from its first point; the first segment that reaches the target is interpolated linearly
to find the count n where it gets there (a curve at or above the target at its first point gives
that point's count). Labels saved = N - n (negative: more labels than random). A curve that never
gets there is reported as ``never reaches random's final accuracy (best x%)``.

**Uncertainty evaluation** (``W/<run>/diagnostics/round_<r>.npz``: ``ids``, ``dispersion``,
``margin``, ``entropy``, ``correct``, optionally ``bald``, ``flips``, ``variability``,
``margin_dynamics``): each score -- highest dispersion / entropy / BALD / flips / variability,
lowest margin / margin dynamics = most uncertain -- is a detector of the round-r model's mistakes
on the pool (mistake = positive). AUROC = P(s+ > s-) + 1/2 P(s+ = s-) (midranks: a tie counts
half); AUPR = average precision, the sum over the distinct score values (a tied block enters at
once) of (recall gain) x (precision), no interpolation; top-p% accuracy = the model's accuracy
on the k = ceil(p * P / 100) most uncertain of the P pool samples, for p = 1, 5, 10, where the
samples tied with the k-th count at their expected value (no order bias). NaN scores rank as the
least uncertain, and a score that is NaN everywhere (dispersion of a run without a prediction
history) is left out. Per run, then mean ± sample std over the runs of a strategy that have
the file.

**One network per table.** Runs whose ``model.*`` keys differ (e.g. dropout for BALD only) are
refused with one line naming the keys, unless ``--allow-mixed-models``; the report then warns
that the comparison mixes protocols, listing them.

All files are written atomically (temporary file + ``os.replace``). A bad input prints one
``error: ...`` line and exits with status 2.
"""

from __future__ import annotations

import dataclasses
import glob
import io
import json
import os
import re
import sys

import numpy as np

from jaxdisp.config_lib import flatten, result_neutral
from jaxdisp.errors import JaxdispError, ReportError
from jaxdisp.cli import ArgumentParser
from jaxdisp.io_utils import atomic_write

PERCENTS = (1, 5, 10)
# score name, column in the npz, True = the highest values are the most uncertain
SCORES = (('dispersion', 'dispersion', True), ('margin', 'margin', False),
          ('entropy', 'entropy', True), ('least confidence', 'least_confidence', True),
          ('BALD', 'bald', True), ('flips', 'flips', True),
          ('variability', 'variability', True),
          ('margin dynamics', 'margin_dynamics', False))
_LOWEST = {name for name, _, highest in SCORES if not highest}
# config keys that may differ between the runs of one report without a warning, beyond the
# result-neutral ones (config_lib.NON_RESULT_KEYS)
_PER_RUN_KEYS = ('strategy', 'seed')
_REQUIRED_DIAG = ('ids', 'dispersion', 'margin', 'entropy', 'correct')


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


# ----------------------------------------------------------------------------- loading

def load_runs(workdir: str) -> list[Run]:
  """Every ``workdir/*/results.json``, sorted by (strategy order, seed)."""
  if not os.path.isdir(workdir):
    raise ReportError(f'{workdir} is not a folder')
  runs, seen = [], {}
  for path in sorted(glob.glob(os.path.join(workdir, '*', 'results.json'))):
    try:
      with open(path) as f:
        doc = json.load(f)
      cfg = doc['config']
      strategy, seed = str(cfg['strategy']), int(cfg['seed'])
      rounds = sorted(doc['rounds'], key=lambda r: r['round'])
      if not rounds:
        continue
      labeled = [int(r['num_labeled']) for r in rounds]
      accuracy = [100.0 * float(r['test_accuracy']) for r in rounds]
      seconds = [dict(r.get('seconds') or {}) for r in rounds]
      balanced = [None if r.get('balanced_accuracy') is None
                  else 100.0 * float(r['balanced_accuracy']) for r in rounds]
    except (OSError, ValueError, KeyError, TypeError) as e:
      raise ReportError(f'cannot read {path}: {type(e).__name__}: {e}') from None
    run_dir = os.path.dirname(path)
    name = os.path.basename(run_dir)
    if (strategy, seed) in seen:
      raise ReportError(f'runs {seen[strategy, seed]} and {name} are both strategy={strategy} '
                        f'seed={seed}; move one of them out of {workdir}')
    seen[strategy, seed] = name
    runs.append(Run(name, run_dir, strategy, seed, cfg, labeled, accuracy, seconds, balanced))
  if not runs:
    hint = (f' ({workdir} is one run: pass the folder that holds the runs)'
            if os.path.exists(os.path.join(workdir, 'results.json')) else '')
    raise ReportError(f'no {os.path.join(workdir, "*", "results.json")} found{hint}')
  return sorted(runs, key=lambda r: (_strategy_rank(r.strategy), r.seed))


def check_one_model(runs, allow_mixed: bool = False) -> list[str]:
  """The ``model.*`` keys whose values differ between ``runs`` (a key a run's config lacks --
  written before the key existed -- counts as its default). Raises ReportError when any do,
  unless ``allow_mixed``: a table of strategies run on different networks (say, dropout only
  for BALD) compares networks as much as strategies."""
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


def _strategy_rank(s: str):
  """Registered strategies in registry order (built-ins first), then others by name."""
  from jaxdisp import strategies as registry  # pylint: disable=g-import-not-at-top
  known = registry.names()
  return (known.index(s), '') if s in known else (len(known), s)


def strategies(runs) -> list[str]:
  return sorted({r.strategy for r in runs}, key=_strategy_rank)


def runs_by_strategy(runs) -> dict[str, list[Run]]:
  """``{strategy: its runs}`` in report order."""
  groups: dict[str, list[Run]] = {}
  for r in runs:
    groups.setdefault(r.strategy, []).append(r)
  return {s: groups[s] for s in strategies(runs)}


# ----------------------------------------------------------------------------- statistics

# t(0.975, df) for df = 1..30 (scipy.stats.t.ppf(0.975, df), 6 decimals); larger df use the
# Cornish-Fisher expansion of :func:`t_quantile_975` (error < 1e-7 from df = 31).
_T975 = (12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912, 2.364624, 2.306004,
         2.262157, 2.228139, 2.200985, 2.178813, 2.160369, 2.144787, 2.131450, 2.119905,
         2.109816, 2.100922, 2.093024, 2.085963, 2.079614, 2.073873, 2.068658, 2.063899,
         2.059539, 2.055529, 2.051831, 2.048407, 2.045230, 2.042272)
_Z975 = 1.959963984540054


def t_quantile_975(df: int) -> float:
  """The 97.5% quantile of Student's t with ``df`` degrees of freedom (two-sided 95%)."""
  if df < 1:
    raise ValueError(f'df={df} must be >= 1')
  if df <= len(_T975):
    return _T975[df - 1]
  z = _Z975
  return (z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
          + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3)
          + (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / (92160 * df**4))


def sample_std(values) -> float:
  """Sample standard deviation (``ddof=1``); NaN for fewer than 2 values."""
  v = np.asarray(values, np.float64)
  return float(v.std(ddof=1)) if len(v) >= 2 else float('nan')


def t_interval(values) -> tuple[float, float, float]:
  """(mean, low, high): the 95% Student t interval of the mean; NaN bounds below 2 values."""
  v = np.asarray(values, np.float64)
  mean = float(v.mean()) if len(v) else float('nan')
  if len(v) < 2:
    return mean, float('nan'), float('nan')
  half = t_quantile_975(len(v) - 1) * sample_std(v) / np.sqrt(len(v))
  return mean, mean - half, mean + half


def aulc(labeled, accuracy, start: float | None = None, end: float | None = None) -> float:
  """Area under the learning curve over ``[start, end]`` divided by ``end - start``.

  The curve is the run's points (labels, accuracy) joined by straight lines; the trapezoid rule
  integrates it exactly. ``start``/``end`` default to the first/last labeled count and must lie
  inside the curve's range (points between rounds are interpolated linearly).
  """
  x, y = np.asarray(labeled, np.float64), np.asarray(accuracy, np.float64)
  order = np.argsort(x, kind='stable')
  x, y = x[order], y[order]
  start = x[0] if start is None else float(start)
  end = x[-1] if end is None else float(end)
  if not x[0] <= start < end <= x[-1]:
    raise ValueError(f'[{start}, {end}] is not a range inside the curve\'s [{x[0]}, {x[-1]}]')
  xs = np.concatenate([[start], x[(x > start) & (x < end)], [end]])
  ys = np.interp(xs, x, y)
  return float(np.sum(np.diff(xs) * (ys[1:] + ys[:-1]) / 2.0) / (end - start))


def aulc_range(runs) -> tuple[float, float] | None:
  """[a, b]: the latest first labeled count and the earliest last one over ``runs`` (the range
  every run covers); None if it is empty."""
  a = max(r.labeled[0] for r in runs)
  b = min(r.labeled[-1] for r in runs)
  return (float(a), float(b)) if b > a else None


@dataclasses.dataclass
class Paired:
  strategy: str
  seeds: list[int]  # paired with random
  d_aulc: list[float]  # per seed: strategy - random
  d_final: list[float]  # per seed: accuracy at b, strategy - random


def paired_differences(runs, span: tuple[float, float]) -> list[Paired]:
  """Each strategy's per-seed AULC and accuracy-at-``b`` differences against random."""
  a, b = span
  by = {(r.strategy, r.seed): r for r in runs}
  out = []
  for s in strategies(runs):
    if s == 'random':
      continue
    seeds = sorted(seed for (t, seed) in by if t == s and ('random', seed) in by)
    d_aulc, d_final = [], []
    for seed in seeds:
      run, ref = by[s, seed], by['random', seed]
      d_aulc.append(aulc(run.labeled, run.accuracy, a, b) - aulc(ref.labeled, ref.accuracy, a, b))
      d_final.append(float(np.interp(b, run.labeled, run.accuracy)
                           - np.interp(b, ref.labeled, ref.accuracy)))
    out.append(Paired(s, seeds, d_aulc, d_final))
  return out


# ----------------------------------------------------------------------------- accuracy

@dataclasses.dataclass
class Curve:
  """A strategy's accuracy (%) per labeled count over its seeds."""
  labeled: np.ndarray  # int [C], increasing
  mean: np.ndarray  # [C]
  std: np.ndarray  # [C], sample std (ddof=1; NaN with one seed)
  n: np.ndarray  # int [C]: seeds with this count
  seeds: list[int]


def curves(runs, field: str = 'accuracy') -> dict[str, Curve]:
  """Per strategy, ``field`` (``accuracy`` or ``balanced``, percent) per labeled count over its
  seeds; rounds without a value (older results) are left out."""
  out = {}
  for s, mine in runs_by_strategy(runs).items():
    per_count: dict[int, list[float]] = {}
    for r in mine:
      for n, a in zip(r.labeled, getattr(r, field)):
        if a is not None:
          per_count.setdefault(n, []).append(a)
    counts = sorted(per_count)
    vals = [np.asarray(per_count[n], np.float64) for n in counts]
    out[s] = Curve(np.asarray(counts, np.int64), np.array([v.mean() for v in vals]),
                   np.array([sample_std(v) for v in vals]),
                   np.array([len(v) for v in vals], np.int64), sorted(r.seed for r in mine))
  return out


def labels_to_reach(labeled, mean, target: float) -> float | None:
  """The labeled count where the piecewise-linear curve first reaches ``target`` (or None)."""
  x, y = np.asarray(labeled, np.float64), np.asarray(mean, np.float64)
  for i in range(len(x)):
    if y[i] >= target:
      if i == 0:
        return float(x[0])
      return float(x[i - 1] + (target - y[i - 1]) * (x[i] - x[i - 1]) / (y[i] - y[i - 1]))
  return None


@dataclasses.dataclass
class Saved:
  strategy: str
  reaches_at: float | None  # labeled count at which the mean curve reaches the target
  saved: float | None  # random_final_labels - reaches_at
  best: float  # the curve's best mean accuracy


def labels_saved(cs: dict[str, Curve]) -> tuple[tuple[int, float] | None, list[Saved]]:
  """((random's final labeled count, its final mean accuracy), one Saved per other strategy)."""
  if 'random' not in cs or not len(cs['random'].labeled):
    return None, []
  final_n, target = int(cs['random'].labeled[-1]), float(cs['random'].mean[-1])
  out = []
  for s, c in cs.items():
    if s == 'random':
      continue
    at = labels_to_reach(c.labeled, c.mean, target)
    out.append(Saved(s, at, None if at is None else final_n - at, float(np.max(c.mean))))
  return (final_n, target), out


# ----------------------------------------------------------------------------- diagnostics

def top_k(percent: int, size: int) -> int:
  """k = ceil(percent * size / 100), at least 1 (integer arithmetic: no float rounding)."""
  return max(1, -(-percent * size // 100))


def uncertainty(score, highest: bool) -> np.ndarray:
  """``score`` as float64 with higher = more uncertain (``-score`` if not ``highest``); NaN
  becomes ``-inf``: ranked as the least uncertain."""
  u = np.asarray(score, np.float64)
  u = u if highest else -u
  return np.where(np.isnan(u), -np.inf, u)


def _check_detector(score, positive) -> tuple[np.ndarray, np.ndarray]:
  s = np.asarray(score, np.float64)
  p = np.asarray(positive, bool)
  if s.shape != p.shape or s.ndim != 1:
    raise ValueError(f'score {s.shape} and labels {p.shape} must be 1-D of one length')
  if np.isnan(s).any():
    raise ValueError('NaN scores: rank them first (e.g. report.uncertainty)')
  return s, p


def auroc(score, positive) -> float:
  """Area under the ROC curve of ``score`` (higher = more likely positive) for ``positive``.

  Exactly P(s+ > s-) + 1/2 P(s+ = s-) over all (positive, negative) pairs, from midranks (the
  Mann-Whitney statistic): a tied block of scores moves the ROC curve diagonally, whatever the
  order inside it. NaN when there are no positives or no negatives.
  """
  s, p = _check_detector(score, positive)
  n_pos, n_neg = int(p.sum()), int((~p).sum())
  if not n_pos or not n_neg:
    return float('nan')
  _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
  below = np.cumsum(counts) - counts  # samples with a strictly smaller score
  midrank = below + (counts + 1) / 2.0  # 1-based rank, averaged over the tied block
  rank_sum = float(midrank[inverse.reshape(-1)][p].sum())
  return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def average_precision(score, positive) -> float:
  """Average precision of ``score`` (higher = more likely positive), as scikit-learn computes it.

  One threshold per distinct score, from the highest down (a tied block enters at once):
  AP = sum_n (R_n - R_{n-1}) * P_n, with recall R_n and precision P_n at threshold n and R_0 = 0;
  no interpolation. NaN when there are no positives.
  """
  s, p = _check_detector(score, positive)
  n_pos = int(p.sum())
  if not n_pos:
    return float('nan')
  _, inverse = np.unique(-s, return_inverse=True)  # block 0 = the highest score
  inverse = inverse.reshape(-1)
  tp = np.cumsum(np.bincount(inverse, weights=p))
  seen = np.cumsum(np.bincount(inverse))
  recall = tp / n_pos
  return float(np.sum(np.diff(recall, prepend=0.0) * (tp / seen)))


def topk_accuracy_expected(score, correct, percent: float, highest: bool = True) -> float:
  """Accuracy (fraction) on the k = :func:`top_k` most uncertain samples, ties at expected value.

  The samples strictly more uncertain than the k-th all count; of the g samples tied with the
  k-th (c of them correct), the m places still open count m * c / g correct: the mean over every
  order of the tied block, so no order (dataset id, file order) decides. NaN ranks last.
  """
  u = uncertainty(score, highest)
  ok = np.asarray(correct, bool)
  if u.shape != ok.shape or u.ndim != 1 or not len(u):
    raise ValueError(f'score {u.shape} and correct {ok.shape} must be 1-D of one non-zero length')
  k = top_k(percent, len(u))
  _, inverse = np.unique(-u, return_inverse=True)  # block 0 = the most uncertain
  inverse = inverse.reshape(-1)
  size = np.bincount(inverse)
  right = np.bincount(inverse, weights=ok)
  reached = np.cumsum(size)
  g = int(np.searchsorted(reached, k))  # the block that holds the k-th sample
  open_places = k - (reached[g] - size[g])
  return float((right[:g].sum() + open_places * right[g] / size[g]) / k)


def diagnostics_of_file(path: str) -> dict:
  """{'round', 'pool', 'pool_accuracy' (%), 'error_rate' (fraction), 'scores': {score: {'auroc',
  'aupr', 'top': [acc% per PERCENTS]}}, 'dispersion'} of one diagnostics file."""
  m = re.fullmatch(r'round_(\d+)\.npz', os.path.basename(path))
  with np.load(path) as z:
    missing = [k for k in _REQUIRED_DIAG if k not in z.files]
    if missing:
      raise ValueError(f'missing array(s) {", ".join(missing)}')
    arrays = {k: np.asarray(z[k]) for k in z.files}
  size = len(arrays['ids'])
  bad = [k for k in _REQUIRED_DIAG + tuple(c for _, c, _ in SCORES)
         if k in arrays and arrays[k].shape != (size,)]
  if bad:
    raise ValueError(f'array(s) {", ".join(bad)} do not have the shape of ids ({size},)')
  if size == 0:
    raise ValueError('empty pool')
  correct = arrays['correct'].astype(bool)
  scores = {}
  for name, column, highest in SCORES:
    if column not in arrays or np.isnan(arrays[column].astype(np.float64)).all():
      continue
    u = uncertainty(arrays[column], highest)
    scores[name] = {'auroc': auroc(u, ~correct), 'aupr': average_precision(u, ~correct),
                    'top': [100.0 * topk_accuracy_expected(u, correct, p) for p in PERCENTS]}
  disp = arrays['dispersion'].astype(np.float64)
  return {'round': int(m.group(1)), 'pool': size, 'pool_accuracy': 100.0 * correct.mean(),
          'error_rate': float(1.0 - correct.mean()), 'scores': scores,
          'dispersion': disp[~np.isnan(disp)] if 'dispersion' in scores else None}


def collect_diagnostics(runs):
  """(rows, dispersion values per (strategy, round), problems).

  One row per (strategy, round, score) with each metric's per-run values (``auroc``, ``aupr``,
  ``top`` [runs, len(PERCENTS)], ``pool_accuracy``, ``error_rate``), for mean ± std over runs.
  """
  acc: dict = {}  # (strategy, round, score) -> list of (per-score dict, file dict)
  hist: dict = {}  # (strategy, round) -> list of arrays
  problems = []
  for run in runs:
    files = [f for f in glob.glob(os.path.join(run.path, 'diagnostics', 'round_*.npz'))
             if re.fullmatch(r'round_\d+\.npz', os.path.basename(f))]
    for f in sorted(files, key=lambda f: int(re.findall(r'\d+', os.path.basename(f))[0])):
      try:
        d = diagnostics_of_file(f)
      except Exception as e:  # pylint: disable=broad-except  (zip/npz/shape problems)
        problems.append(f'{os.path.relpath(f, os.path.dirname(run.path))}: {e}')
        continue
      for score, values in d['scores'].items():
        acc.setdefault((run.strategy, d['round'], score), []).append((values, d))
      if d['dispersion'] is not None:
        hist.setdefault((run.strategy, d['round']), []).append(d['dispersion'])
  rows = []
  order = {name: i for i, (name, _, _) in enumerate(SCORES)}
  for (s, r, score), vals in sorted(acc.items(), key=lambda kv: (
      _strategy_rank(kv[0][0]), kv[0][1], order[kv[0][2]])):
    rows.append({'strategy': s, 'round': r, 'score': score, 'runs': len(vals),
                 'auroc': [v['auroc'] for v, _ in vals], 'aupr': [v['aupr'] for v, _ in vals],
                 'top': np.asarray([v['top'] for v, _ in vals], np.float64),
                 'pool_accuracy': [d['pool_accuracy'] for _, d in vals],
                 'error_rate': [d['error_rate'] for _, d in vals]})
  return rows, hist, problems


# ----------------------------------------------------------------------------- cost

def pool_passes(strategy: str, config: dict) -> str:
  """What a strategy's score costs per round, in forward passes over the pool: its registry
  entry's ``cost`` with ``{config.key}`` filled in, or T for strategies that record the pool
  every epoch. '?' for a strategy this process does not know."""
  from jaxdisp import strategies as registry  # pylint: disable=g-import-not-at-top
  if strategy not in registry.names():
    return '?'
  s = registry.get(strategy)
  if s.records:
    d, epochs = config.get('dispersion', {}), config.get('train', {}).get('epochs')
    if epochs is None:
      return 'T (one per recorded epoch, during training)'
    t = len(range(int(d.get('record_from_epoch', 0)), int(epochs), int(d.get('record_every', 1))))
    return f'{t} (T: one per recorded epoch, during training; none after)'
  flat = flatten(config)
  return re.sub(r'\{([a-z_.]+)\}', lambda m: str(flat.get(m.group(1), '?')), s.cost)


def costs(runs) -> list[dict]:
  """Per strategy: pool passes, mean seconds per round of training (all rounds), scoring and
  selection (the rounds that queried), and ``query`` = score + select; runs."""
  out = []
  for s, mine in runs_by_strategy(runs).items():
    train, score, select = [], [], []
    for r in mine:
      rounds = r.config.get('al', {}).get('rounds')
      for i, sec in enumerate(r.seconds):
        if 'train' in sec:
          train.append(float(sec['train']))
        queried = i < rounds if rounds is not None else i < len(r.seconds) - 1
        if queried and 'score' in sec:
          score.append(float(sec['score']))
          select.append(float(sec.get('select', 0.0)))
    mean = lambda v: float(np.mean(v)) if v else float('nan')
    out.append({'strategy': s, 'passes': pool_passes(s, mine[0].config), 'runs': len(mine),
                'train': mean(train), 'score': mean(score), 'select': mean(select),
                'query': mean([a + b for a, b in zip(score, select)])})
  return out


# ----------------------------------------------------------------------------- output

def _seeds(n: int) -> str:
  return f'{n} seed' if n == 1 else f'{n} seeds'


def _fmt(x: float) -> str:
  return f'{x:.2f}'


def _mean_std(values, digits: int = 2) -> str:
  """'mean ± sample std' of the finite values ('mean' alone for one, '-' for none); '(n=k)'
  when only k of them are finite."""
  v = [float(x) for x in values if np.isfinite(x)]
  if not v:
    return '-'
  text = f'{np.mean(v):.{digits}f}'
  if len(v) >= 2:
    text += f' ± {sample_std(v):.{digits}f}'
  return text + (f' (n={len(v)})' if len(v) < len(values) else '')


def _interval(values) -> tuple[str, str]:
  """('+mean', '[low, high]') of the 95% t interval; the interval is '-' below 2 values."""
  mean, low, high = t_interval(values)
  if not len(values):
    return '-', '-'
  return f'{mean:+.2f}', ('-' if np.isnan(low) else f'[{low:+.2f}, {high:+.2f}]')


def _save_figure(fig, path: str) -> None:
  import matplotlib.pyplot as plt
  buf = io.BytesIO()
  fig.savefig(buf, format='png')
  plt.close(fig)
  atomic_write(path, buf.getvalue())


def _pyplot():
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  return plt


def plot_learning_curves(path: str, cs: dict[str, Curve], title: str) -> None:
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
  for s, c in cs.items():
    line, = ax.plot(c.labeled, c.mean, 'o-', ms=3, label=f'{s} ({_seeds(len(c.seeds))})')
    std = np.nan_to_num(c.std)  # one seed: no band
    ax.fill_between(c.labeled, c.mean - std, c.mean + std, color=line.get_color(),
                    alpha=0.2, lw=0)
  ax.set_xlabel('labeled samples')
  ax.set_ylabel('test accuracy (%)')
  ax.set_title(title, fontsize=9)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  _save_figure(fig, path)


def plot_dispersion_hist(path: str, strategy: str, per_round: dict[int, list]) -> None:
  plt = _pyplot()
  rounds = sorted(per_round)
  fig, axes = plt.subplots(len(rounds), 1, figsize=(6, 1.9 * len(rounds) + 0.6), dpi=110,
                           sharex=True, squeeze=False)
  for ax, r in zip(axes[:, 0], rounds):
    values = np.concatenate(per_round[r])
    weights = np.concatenate([np.full(len(v), 1.0 / len(v) / len(per_round[r]))
                              for v in per_round[r]])  # each run counts equally
    distinct = np.unique(values)
    if len(distinct) <= 60:  # dispersion takes k / T values: one bar per value
      width = 0.8 * (np.min(np.diff(distinct)) if len(distinct) > 1 else 0.05)
      heights = [weights[values == v].sum() for v in distinct]
      ax.bar(distinct, heights, width=width)
    else:
      ax.hist(values, bins=30, range=(0.0, 1.0), weights=weights)
    ax.set_ylabel('fraction')
    ax.set_title(f'{strategy}: round {r} ({len(per_round[r])} run(s), '
                 f'{len(per_round[r][0])} pool samples each), mean {_fmt(values.mean())}',
                 fontsize=8)
    ax.grid(alpha=0.3)
  axes[-1, 0].set_xlabel('label dispersion')
  fig.tight_layout()
  _save_figure(fig, path)


def _config_summary(runs) -> tuple[str, list[str]]:
  from jaxdisp.config_lib import base_config  # pylint: disable=g-import-not-at-top
  defaults = flatten(base_config())  # keys added after a run was made count as their default
  flat = [{**defaults, **flatten(r.config)} for r in runs]
  keys = sorted(set().union(*flat))
  differ = [k for k in keys if not result_neutral(k, _PER_RUN_KEYS)
            and len({json.dumps(f.get(k), sort_keys=True, default=str) for f in flat}) > 1]
  c = flat[0]
  get = lambda k: c.get(k, '?')
  text = (f'dataset `{get("dataset.name")}` ({get("dataset.source")}), model '
          f'`{get("model.name")}` width {get("model.width")}, {get("train.epochs")} epochs, '
          f'{get("al.initial_size")} initial labels + {get("al.rounds")} x {get("al.budget")}, '
          f'pool subset {get("al.pool_subset") or "all"}')
  if float(c.get('dataset.imbalance', 1.0)) != 1.0:
    text += (f', long-tailed training split (dataset.imbalance={get("dataset.imbalance")}, '
             f'data_seed {get("dataset.data_seed")})')
  return text, differ


def _curve_table(cs: dict) -> list[str]:
  """Markdown rows: one per labeled count, one column per strategy, mean ± std (n=k)."""
  md = ['| labels | ' + ' | '.join(f'{s} ({_seeds(len(c.seeds))})' for s, c in cs.items()) + ' |',
        '|---:|' + '---:|' * len(cs)]
  for n in sorted({int(n) for c in cs.values() for n in c.labeled}):
    cells = []
    for c in cs.values():
      hit = np.flatnonzero(c.labeled == n)
      if not len(hit):
        cells.append('-')
        continue
      i = hit[0]
      cell = _fmt(c.mean[i]) + (f' ± {_fmt(c.std[i])}' if c.n[i] >= 2 else '')
      if c.n[i] < len(c.seeds):
        cell += f' (n={c.n[i]})'
      cells.append(cell)
    md.append(f'| {n} | ' + ' | '.join(cells) + ' |')
  return md


def build(workdir: str, allow_mixed_models: bool = False) -> tuple[str, dict]:
  """The report's markdown text and its figures' data (no files written)."""
  runs = load_runs(workdir)
  check_one_model(runs, allow_mixed_models)
  cs = curves(runs)
  setup, differ = _config_summary(runs)
  md = [f'# Active-learning report: `{os.path.basename(os.path.abspath(workdir))}`', '',
        f'{len(runs)} runs from `{workdir}`: ' + ', '.join(
            f'{s} (seeds {", ".join(map(str, c.seeds))})' for s, c in cs.items()) + '.',
        f'Setup (first run): {setup}.', '']
  if differ:
    md += [f'**Warning**: the runs differ in config keys other than strategy/seed: '
           f'{", ".join(differ)}; the comparison mixes protocols.', '']

  # -- accuracy table
  md += ['## Test accuracy', '',
         'Test accuracy (%), mean ± std over seeds; std is the sample standard deviation '
         '(numpy `ddof=1`) of the per-seed accuracies, left out where there is one seed. `(n=k)` '
         "marks a count that only k of the strategy's seeds have reached.", '']
  md += _curve_table(cs)
  md += ['', '![learning curves: mean ± std over seeds](learning_curves.png)', '']
  balanced = {s: c for s, c in curves(runs, 'balanced').items() if len(c.labeled)}
  if balanced:
    md += ['## Balanced accuracy', '',
           'The mean over classes of each class\'s test accuracy (%) (`balanced_accuracy` in '
           'results.json; per-class values are in `class_accuracy`), mean ± sample std over '
           'seeds. It differs from test accuracy when the test split is imbalanced or the model '
           'neglects classes (e.g. after training on `dataset.imbalance` > 1).', '']
    md += _curve_table(balanced) + ['']
  md += _aulc_section(runs)

  # -- labels saved
  md += ['## Labels saved against random', '']
  reference, saved = labels_saved(cs)
  if reference is None:
    md += ['No `random` runs: skipped.', '']
  else:
    final_n, target = reference
    md += [f"Target: random's final mean accuracy, {_fmt(target)}% at {final_n} labels. Method: "
           "each strategy's mean curve (the means above, joined by straight lines in order of "
           'labeled count) is scanned from its first point; the first segment that reaches the '
           'target is interpolated linearly to find the labeled count where the curve gets there '
           "(a curve already at or above the target at its first point gives that point's "
           f'count). Labels saved = {final_n} - that count (negative: more labels than random).']
    own = labels_to_reach(cs['random'].labeled, cs['random'].mean, target)
    if own is not None and own < final_n:
      md += ['', f"Random's own mean curve already reaches this accuracy at {_fmt(own)} labels "
             '(it is not monotonic), so part of any saving measures the noise of random, not '
             'the strategy.']
    md.append('')
    if saved:
      md += ['| strategy | reaches the target at (labels) | labels saved |', '|---|---:|---:|']
      for sv in saved:
        if sv.reaches_at is None:
          md.append(f"| {sv.strategy} | - | never reaches random's final accuracy "
                    f'(best {_fmt(sv.best)}%) |')
        else:
          md.append(f'| {sv.strategy} | {_fmt(sv.reaches_at)} | {_fmt(sv.saved)} '
                    f'({_fmt(100.0 * sv.saved / final_n)}% of {final_n}) |')
      md.append('')
    else:
      md += ['Only random was run: nothing to compare.', '']

  # -- uncertainty evaluation
  md += ["## Uncertainty evaluation: which score finds the model's mistakes", '']
  rows, hist, problems = collect_diagnostics(runs)
  figures = {'curves': cs, 'hist': {}}
  if not rows:
    md += ['No pool diagnostics (`<run>/diagnostics/round_<r>.npz`) found: skipped.', '']
  else:
    md += ["Each score ranks the pool that round r's final model scored in round r: highest "
           'dispersion / entropy / BALD / flips / variability, lowest margin (top-1 minus top-2 '
           'probability) / margin dynamics (mean top-1 minus top-2 logit over the recorded '
           'epochs) = most '
           "uncertain. A mistake (the model's prediction differs from the label) is a positive, "
           'the score is the detector. **AUROC** = P(s+ > s-) + 1/2 P(s+ = s-) over all '
           '(mistake, correct) pairs: ties count half (midranks), 0.5 = chance. **AUPR** = '
           'average precision, the sum over the distinct score values, from the most uncertain '
           'down, of (recall gain) x (precision); a tied block enters at once, no '
           'interpolation; chance = the error rate. NaN scores rank as the least uncertain. '
           'Per run, then mean ± sample std (`ddof=1`) over the runs (seeds) that have the file '
           '(`runs`).', '',
           '| strategy | round | score | AUROC | AUPR | error rate | runs |',
           '|---|---:|---|---:|---:|---:|---:|']
    for row in rows:
      direction = 'lowest' if row['score'] in _LOWEST else 'highest'
      md.append(f'| {row["strategy"]} | {row["round"]} | {row["score"]} ({direction}) | '
                f'{_mean_std(row["auroc"], 3)} | {_mean_std(row["aupr"], 3)} | '
                f'{_mean_std(row["error_rate"], 3)} | {row["runs"]} |')
    md += ['', "Accuracy (%) of the round's model on the top 1% / 5% / 10% most uncertain pool "
           'samples (k = ceil(p * P / 100) of P) and on the whole pool; lower on the top slice = '
           'the score finds the mistakes. The samples strictly more uncertain than the k-th '
           'count whole; the g samples tied with the k-th (c of them correct) fill the m places '
           'left at their expected value, m * c / g correct: the mean over every order of the '
           'tied block, so no order (dataset id, file order) decides. Dispersion takes at most '
           'T + 1 values, so its slice boundary is usually tied. Mean ± sample std over the '
           'runs.', '',
           '| strategy | round | score | top 1% | top 5% | top 10% | whole pool | runs |',
           '|---|---:|---|---:|---:|---:|---:|---:|']
    for row in rows:
      direction = 'lowest' if row['score'] in _LOWEST else 'highest'
      md.append(f'| {row["strategy"]} | {row["round"]} | {row["score"]} ({direction}) | '
                + ' | '.join(_mean_std(row['top'][:, j]) for j in range(len(PERCENTS)))
                + f' | {_mean_std(row["pool_accuracy"])} | {row["runs"]} |')
    md.append('')
    by_strategy: dict = {}
    for (s, r), values in hist.items():
      by_strategy.setdefault(s, {})[r] = values
    for s in sorted(by_strategy, key=_strategy_rank):
      name = f'dispersion_hist_{s}.png'
      figures['hist'][name] = (s, by_strategy[s])
      md += [f'![{s}: dispersion over the pool per round]({name})', '']
    if not by_strategy:
      md += ['No run kept a prediction history (dispersion is NaN): no dispersion histogram.',
             '']
  if problems:
    md += ['Skipped diagnostics files: ' + '; '.join(f'`{p}`' for p in problems), '']
  md += _cost_section(runs)
  return '\n'.join(md), figures


def _aulc_section(runs) -> list[str]:
  md = ['## Area under the learning curve', '']
  span = aulc_range(runs)
  if span is None:
    return md + ['The runs share no range of labeled counts (a run that finished only its first '
                 'round?): skipped.', '']
  a, b = span
  ends = sorted({r.labeled[-1] for r in runs})
  md += [f'AULC: the trapezoid of test accuracy (%) against the number of labels from {a:g} to '
         f'{b:g}, divided by {b - a:g}: the mean accuracy over that range. The initial point '
         f'({a:g} labels, the initial set) is included. {b:g} is the largest count every run '
         'reached' + (f' (runs end at {", ".join(f"{e:g}" for e in ends)}; the longer ones are '
                      f'cut at {b:g})' if len(ends) > 1 else '')
         + '. Computed per run, then mean ± sample std (`ddof=1`) over seeds.', '',
         '| strategy | seeds | AULC (%) |', '|---|---:|---:|']
  for s, mine in runs_by_strategy(runs).items():
    values = [aulc(r.labeled, r.accuracy, a, b) for r in mine]
    md.append(f'| {s} | {len(values)} | {_mean_std(values)} |')
  md.append('')
  md += ['### Paired differences against random', '']
  if 'random' not in runs_by_strategy(runs):  # the baseline every strategy is paired with
    return md + ['No `random` runs: skipped.', '']
  pairs = paired_differences(runs, span)
  if not pairs:
    return md + ['Only random was run: nothing to compare.', '']
  md += ['The same seed gives every strategy the same initial set (and round-0 model), so each '
         'strategy is compared with random seed by seed: d = strategy - random in AULC and in '
         f'test accuracy at {b:g} labels (percentage points), over the seeds both have. Mean of '
         'd and its 95% Student t interval, mean ± t(0.975, n - 1) * s / sqrt(n), s = the '
         'sample std of d (no interval with one pair). An interval that excludes 0 is a '
         'difference at the 95% level; one that contains it is not distinguishable from random '
         'with these seeds.', '',
         f'| strategy | paired seeds | Δ AULC | 95% interval | Δ accuracy at {b:g} | '
         '95% interval | AULC vs random |',
         '|---|---:|---:|---:|---:|---:|---|']
  for p in pairs:
    if not p.seeds:
      md.append(f'| {p.strategy} | 0 | - | - | - | - | no seed in common with random |')
      continue
    da, df = _interval(p.d_aulc), _interval(p.d_final)
    _, low, high = t_interval(p.d_aulc)
    verdict = ('-' if np.isnan(low) else 'above' if low > 0 else 'below' if high < 0
               else 'not distinguishable')
    md.append(f'| {p.strategy} | {len(p.seeds)} | {da[0]} | {da[1]} | {df[0]} | {df[1]} | '
              f'{verdict} |')
  return md + ['']


def _cost_section(runs) -> list[str]:
  md = ['## Cost of each strategy', '',
        "Forward passes over the scored pool per round for the strategy's own score, and the "
        "runs' measured seconds per round (results.json `seconds`, mean over runs and rounds): "
        'training (all rounds), scoring and selection (the rounds that queried). Dispersion records '
        'its T passes inside the training epochs, so they are in its training time (compare '
        "with another strategy's training time under the same protocol); the extra pool pass "
        'that writes the diagnostics above is not timed. Entropy and margin cost one pass '
        'whichever strategy selected.', '',
        '| strategy | pool passes per round | train (s/round) | score (s/round) | '
        'select (s/round) | runs |',
        '|---|---|---:|---:|---:|---:|']
  for c in costs(runs):
    cell = lambda x: '-' if np.isnan(x) else f'{x:.2f}'
    md.append(f'| {c["strategy"]} | {c["passes"]} | {cell(c["train"])} | {cell(c["score"])} | '
              f'{cell(c["select"])} | {c["runs"]} |')
  return md + ['']


def write_report(workdir: str, out: str | None = None, allow_mixed_models: bool = False) -> str:
  """Writes report.md and the PNGs into ``out`` (default ``workdir/report``); returns report.md."""
  out = out or os.path.join(workdir, 'report')
  text, figures = build(workdir, allow_mixed_models)
  os.makedirs(out, exist_ok=True)
  for name in os.listdir(out):  # temporaries of a report killed mid-write
    if re.fullmatch(r'\.(report\.md|learning_curves\.png|dispersion_hist_.*\.png)\..*\.tmp', name):
      os.unlink(os.path.join(out, name))
  title = f'{os.path.basename(os.path.abspath(workdir))}: test accuracy, mean ± std over seeds'
  plot_learning_curves(os.path.join(out, 'learning_curves.png'), figures['curves'], title)
  for name, (s, per_round) in figures['hist'].items():
    plot_dispersion_hist(os.path.join(out, name), s, per_round)
  path = os.path.join(out, 'report.md')
  atomic_write(path, text + '\n')
  return path


def main(argv=None) -> int:
  p = ArgumentParser(prog='python -m jaxdisp.report', description=__doc__.splitlines()[0])
  p.add_argument('workdir', help='folder holding one run per subfolder (<run>/results.json)')
  p.add_argument('--out', default=None, help='output folder (default: WORKDIR/report)')
  p.add_argument('--allow-mixed-models', action='store_true',
                 help='put runs with different model.* keys in one table (with a warning)')
  args = p.parse_args(argv)
  try:
    path = write_report(args.workdir, args.out, args.allow_mixed_models)
  except JaxdispError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(f'report: {path}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
