"""The report's numbers over runs: learning curves, AULC, paired differences, labels saved, cost.

Every spread is the sample standard deviation (``ddof=1``) over seeds; every interval is the
95% Student t interval of a mean, ``mean ± t(0.975, n - 1) * s / sqrt(n)`` (``scipy.stats``).
Strategies are compared with :data:`BASELINE` seed by seed: the same seed gives every strategy
the same initial set and round-0 model.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
from scipy import stats

from jaxdisp.config_lib import flatten
from jaxdisp.report.loading import runs_by_strategy, strategies

BASELINE = 'random'  # the strategy every other one is compared with


def t_quantile_975(df: int) -> float:
  """The 97.5% quantile of Student's t with ``df`` degrees of freedom (two-sided 95%)."""
  if df < 1:
    raise ValueError(f'df={df} must be >= 1')
  return float(stats.t.ppf(0.975, df))


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


def paired_t_p(values) -> float:
  """Two-sided p of the paired t-test that the mean of ``values`` (per-seed differences) is 0;
  NaN below 2 values or when every difference is the same (no spread to test against)."""
  v = np.asarray(values, np.float64)
  if len(v) < 2 or not np.isfinite(v).all() or v.std() == 0:
    return float('nan')
  t = v.mean() / (sample_std(v) / np.sqrt(len(v)))
  return float(2.0 * stats.t.sf(abs(t), len(v) - 1))


def holm(pvalues) -> list[float]:
  """Holm's step-down adjustment of a family of p values (NaN entries stay NaN and do not count
  in the family): the i-th smallest of m becomes max over j <= i of min(1, (m - j + 1) p_(j))."""
  p = np.asarray(pvalues, np.float64)
  out = np.full(p.shape, np.nan)
  idx = np.flatnonzero(np.isfinite(p))
  order = idx[np.argsort(p[idx], kind='stable')]
  m, running = len(order), 0.0
  for i, k in enumerate(order):
    running = max(running, min(1.0, (m - i) * p[k]))
    out[k] = running
  return [float(x) for x in out]


def paired_power(effect: float, sd: float, n: int, alpha: float = 0.05) -> float:
  """The power of the two-sided paired t-test at level ``alpha`` with ``n`` pairs whose
  differences have standard deviation ``sd``, when their true mean is ``effect``: P(|T| > c),
  c = t(1 - alpha/2, n - 1), T = (Z + nc) / sqrt(V / df) noncentral t with nc = effect sqrt(n)
  / sd, Z standard normal, V chi-square with df = n - 1. Integrated over V (scipy's ``nct``
  returns NaN for one degree of freedom and a large nc)."""
  from scipy import integrate  # pylint: disable=g-import-not-at-top
  df, nc = n - 1, effect * np.sqrt(n) / sd
  crit = stats.t.ppf(1.0 - alpha / 2.0, df)

  def given_v(v):
    s = crit * np.sqrt(v / df)
    return (stats.norm.sf(s - nc) + stats.norm.cdf(-s - nc)) * stats.chi2.pdf(v, df)

  # split at the chi-square's mode region so quad sees the density's mass
  edges = [0.0, max(df - 2.0, 0.0) + 1e-9, df + 10.0 * np.sqrt(2.0 * df) + 10.0, np.inf]
  return float(min(1.0, sum(integrate.quad(given_v, a, b, limit=200)[0]
                            for a, b in zip(edges[:-1], edges[1:]))))


def min_detectable_effect(sd: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
  """The smallest true mean difference that the paired t-test (two-sided, ``alpha``) over ``n``
  pairs with spread ``sd`` detects with probability ``power``: :func:`paired_power` solved for
  the effect. NaN below 2 pairs or without a finite, positive spread. A comparison that finds
  no difference can rule out effects of about this size, not smaller ones."""
  if n < 2 or not np.isfinite(sd) or sd <= 0:
    return float('nan')
  from scipy import optimize  # pylint: disable=g-import-not-at-top
  high = sd
  while paired_power(high, sd, n, alpha) < power:
    high *= 2.0
  return float(optimize.brentq(lambda e: paired_power(e, sd, n, alpha) - power, 0.0, high,
                               xtol=1e-10 * sd))


# ----------------------------------------------------------------------------- AULC

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
  seeds: list[int]  # paired with the baseline
  d_aulc: list[float]  # per seed: strategy - baseline
  d_final: list[float]  # per seed: accuracy at b, strategy - baseline
  # some paired seed's round-0 accuracy differs from the baseline's: the strategy trains its own
  # round-0 model (an ensemble, an auxiliary head), so d measures more than the acquisition
  own_round0: bool = False


def paired_differences(runs, span: tuple[float, float]) -> list[Paired]:
  """Each strategy's per-seed AULC and accuracy-at-``b`` differences against the baseline."""
  a, b = span
  by = {(r.strategy, r.seed): r for r in runs}
  out = []
  for s in strategies(runs):
    if s == BASELINE:
      continue
    seeds = sorted(seed for (t, seed) in by if t == s and (BASELINE, seed) in by)
    d_aulc, d_final, own = [], [], False
    for seed in seeds:
      run, ref = by[s, seed], by[BASELINE, seed]
      own |= run.labeled[0] == ref.labeled[0] and run.accuracy[0] != ref.accuracy[0]
      d_aulc.append(aulc(run.labeled, run.accuracy, a, b) - aulc(ref.labeled, ref.accuracy, a, b))
      d_final.append(float(np.interp(b, run.labeled, run.accuracy)
                           - np.interp(b, ref.labeled, ref.accuracy)))
    out.append(Paired(s, seeds, d_aulc, d_final, own))
  return out


def paired_labels_saved(runs) -> dict[str, list]:
  """{strategy: [labels saved per paired seed, or None where its curve never reaches it]}: on
  each seed, the target is the baseline's final accuracy at its final labeled count F; the
  strategy's own curve (joined by straight lines) reaches it at L labels, and saves F - L."""
  by = {(r.strategy, r.seed): r for r in runs}
  out = {}
  for s in strategies(runs):
    if s == BASELINE:
      continue
    saved = []
    for seed in sorted(seed for (t, seed) in by if t == s and (BASELINE, seed) in by):
      run, ref = by[s, seed], by[BASELINE, seed]
      at = labels_to_reach(run.labeled, run.accuracy, ref.accuracy[-1])
      saved.append(None if at is None else ref.labeled[-1] - at)
    out[s] = saved
  return out


def penalty_matrix(runs) -> tuple[list[str], np.ndarray, int]:
  """Ash et al. (ICLR 2020)'s pairwise penalty matrix over one setting: (strategies, P, rounds).

  For every pair (i, j) and every round r after the initial one (labeled counts that both
  reach, the same on every paired seed), a two-sided paired t-test at 5% over the seeds both
  have compares their test accuracies; when it rejects, the better one wins the round and
  ``P[winner, loser] += 1 / R`` (R = the rounds compared), so an entry is the fraction of the
  rounds in which the row strategy beats the column strategy. Fewer than 2 paired seeds, or
  differences that are all equal, give no test.
  """
  names = strategies(runs)
  by = {(r.strategy, r.seed): r for r in runs}
  rounds = max(1, min(len(r.labeled) for r in runs) - 1)
  p = np.zeros((len(names), len(names)))
  for i, a in enumerate(names):
    for j, b in enumerate(names):
      if j <= i:
        continue
      seeds = sorted(seed for (t, seed) in by if t == a and (b, seed) in by)
      for r in range(1, rounds + 1):
        d = [by[a, s].accuracy[r] - by[b, s].accuracy[r] for s in seeds
             if len(by[a, s].labeled) > r and len(by[b, s].labeled) > r
             and by[a, s].labeled[r] == by[b, s].labeled[r]]
        if len(d) == len(seeds) and paired_t_p(d) < 0.05:
          winner, loser = (i, j) if np.mean(d) > 0 else (j, i)
          p[winner, loser] += 1.0 / rounds
  return names, p, rounds


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
  saved: float | None  # baseline_final_labels - reaches_at
  best: float  # the curve's best mean accuracy


def labels_saved(cs: dict[str, Curve]) -> tuple[tuple[int, float] | None, list[Saved]]:
  """((the baseline's final labeled count, its final mean accuracy), one Saved per other
  strategy); (None, []) without baseline runs."""
  if BASELINE not in cs or not len(cs[BASELINE].labeled):
    return None, []
  final_n, target = int(cs[BASELINE].labeled[-1]), float(cs[BASELINE].mean[-1])
  out = []
  for s, c in cs.items():
    if s == BASELINE:
      continue
    at = labels_to_reach(c.labeled, c.mean, target)
    out.append(Saved(s, at, None if at is None else final_n - at, float(np.max(c.mean))))
  return (final_n, target), out


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
