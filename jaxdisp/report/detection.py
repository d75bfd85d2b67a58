"""Uncertainty evaluation: how well each pool score finds the round's model's mistakes.

Each score of a diagnostics file is a detector of the mistakes (mistake = positive), its most
uncertain end first (the direction the file records). AUROC = P(s+ > s-) + 1/2 P(s+ = s-)
(midranks: a tie counts half); AUPR = average precision over the distinct score values (a tied
block enters at once), no interpolation; top-p% accuracy = the model's accuracy on the
k = ceil(p * P / 100) most uncertain of the P pool samples, the samples tied with the k-th
counted at their expected value. The risk-coverage view (Geifman & El-Yaniv 2017; Geifman et al.
2019) keeps the least uncertain samples: at coverage i / P the risk is the model's error rate on
the i kept; AURC is the mean risk over i = 1..P, E-AURC is AURC minus that of the ideal order
(every mistake kept last), and risk@c is the risk at coverage c (i = ceil(c P)); tied samples
enter at their expected value, as in top-p%. NaN scores rank as the least uncertain; a score
that is NaN everywhere is left out.
"""

from __future__ import annotations

import os

import numpy as np

from jaxdisp.report.loading import diagnostics_files, read_diagnostics, strategy_rank

PERCENTS = (1, 5, 10)
COVERAGES = (80, 90, 95)  # risk at these coverages (%)
HISTOGRAM_SCORE = 'dispersion'  # the score whose distribution over the pool is plotted


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


def expected_errors_kept(score, correct, highest: bool = True) -> np.ndarray:
  """``E [P + 1]``: E[i] = the expected number of mistakes among the i least uncertain samples
  (E[0] = 0), every order of a tied block equally likely: whole blocks count their mistakes,
  the first m samples of a block of g with e mistakes count m * e / g."""
  u = uncertainty(score, highest)
  ok = np.asarray(correct, bool)
  if u.shape != ok.shape or u.ndim != 1 or not len(u):
    raise ValueError(f'score {u.shape} and correct {ok.shape} must be 1-D of one non-zero length')
  _, inverse = np.unique(u, return_inverse=True)  # block 0 = the least uncertain
  inverse = inverse.reshape(-1)
  size = np.bincount(inverse)
  wrong = np.bincount(inverse, weights=~ok)
  ends = np.concatenate([[0], np.cumsum(size)])
  cum = np.concatenate([[0.0], np.cumsum(wrong)])
  return np.interp(np.arange(len(u) + 1), ends, cum)  # linear inside each block


def risk_coverage(score, correct, highest: bool = True) -> dict:
  """``{'aurc', 'eaurc', 'risk': [risk at each of COVERAGES]}`` (fractions) of one score: see
  the module's docstring."""
  errors = expected_errors_kept(score, correct, highest)
  n = len(errors) - 1
  kept = np.arange(1, n + 1)
  aurc = float(np.mean(errors[1:] / kept))
  n_wrong = int(round(errors[-1]))
  ideal = np.maximum(kept - (n - n_wrong), 0) / kept  # mistakes kept last
  risk = [float(errors[k] / k) for k in (max(1, -(-c * n // 100)) for c in COVERAGES)]
  return {'aurc': aurc, 'eaurc': aurc - float(np.mean(ideal)), 'risk': risk}


# ----------------------------------------------------------------------------- per file, per run

def diagnostics_of_file(path: str) -> dict:
  """{'round', 'pool', 'pool_accuracy' (%), 'error_rate' (fraction), 'order' (every score name
  of the file, in table order), 'scores': {name: {'score' (loading.Score), 'auroc', 'aupr',
  'top': [acc% per PERCENTS], 'aurc', 'eaurc', 'risk': [per COVERAGES]}} (scores with a finite
  value; the risk-coverage numbers as fractions), 'dispersion' (the finite values of
  :data:`HISTOGRAM_SCORE`, or None)} of one diagnostics file."""
  d = read_diagnostics(path)
  correct = d.correct
  scores = {}
  for score in d.scores:
    if np.isnan(d.values[score.name].astype(np.float64)).all():
      continue
    u = uncertainty(d.values[score.name], score.highest)
    scores[score.name] = {
        'score': score, 'auroc': auroc(u, ~correct), 'aupr': average_precision(u, ~correct),
        'top': [100.0 * topk_accuracy_expected(u, correct, p) for p in PERCENTS],
        **risk_coverage(u, correct)}
  hist = None
  if HISTOGRAM_SCORE in scores:
    values = d.values[HISTOGRAM_SCORE].astype(np.float64)
    hist = values[~np.isnan(values)]
  return {'round': d.round, 'pool': len(correct), 'pool_accuracy': 100.0 * correct.mean(),
          'error_rate': float(1.0 - correct.mean()), 'order': [s.name for s in d.scores],
          'scores': scores, 'dispersion': hist}


def merge_order(order: list[str], names) -> None:
  """Adds the names of ``names`` (one file's table order) that ``order`` lacks, each right
  after the name before it in ``names`` (at the front when it is the first)."""
  at = -1
  for name in names:
    if name in order:
      at = order.index(name)
    else:
      at += 1
      order.insert(at, name)


def collect_diagnostics(runs):
  """(rows, dispersion values per (strategy, round), problems).

  One row per (strategy, round, score) with the score's ``name``, display name (``score``) and
  direction (``highest``, as its first file records them) and each metric's per-run values
  (``auroc``, ``aupr``, ``top`` [runs, len(PERCENTS)], ``aurc``, ``eaurc`` and ``risk`` [runs,
  len(COVERAGES)] in percent, ``pool_accuracy``, ``error_rate``), for
  mean ± std over runs. Rows in strategy order, then round, then the files' score order.
  """
  acc: dict = {}  # (strategy, round, score name) -> list of (per-score dict, file dict)
  hist: dict = {}  # (strategy, round) -> list of arrays
  order: list[str] = []
  problems = []
  for run in runs:
    for f in diagnostics_files(run):
      try:
        d = diagnostics_of_file(f)
      except Exception as e:  # pylint: disable=broad-except  (zip/npz/shape problems)
        problems.append(f'{os.path.relpath(f, os.path.dirname(run.path))}: {e}')
        continue
      merge_order(order, d['order'])
      for name, values in d['scores'].items():
        acc.setdefault((run.strategy, d['round'], name), []).append((values, d))
      if d['dispersion'] is not None:
        hist.setdefault((run.strategy, d['round']), []).append(d['dispersion'])
  rows = []
  for (s, r, name), vals in sorted(acc.items(), key=lambda kv: (
      strategy_rank(kv[0][0]), kv[0][1], order.index(kv[0][2]))):
    score = vals[0][0]['score']
    rows.append({'strategy': s, 'round': r, 'name': name, 'score': score.label,
                 'highest': score.highest, 'runs': len(vals),
                 'auroc': [v['auroc'] for v, _ in vals], 'aupr': [v['aupr'] for v, _ in vals],
                 'top': np.asarray([v['top'] for v, _ in vals], np.float64),
                 'aurc': [100.0 * v['aurc'] for v, _ in vals],
                 'eaurc': [100.0 * v['eaurc'] for v, _ in vals],
                 'risk': 100.0 * np.asarray([v['risk'] for v, _ in vals], np.float64),
                 'pool_accuracy': [d['pool_accuracy'] for _, d in vals],
                 'error_rate': [d['error_rate'] for _, d in vals]})
  return rows, hist, problems
