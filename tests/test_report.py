"""jaxdisp.report on synthetic results.json / diagnostics files (every number checked by hand),
and one small end-to-end jaxdisp.sweep (2 strategies x 1 seed of the tiny config)."""

import json
import math
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from jaxdisp import cli, report, sweep
from jaxdisp.files import TMP_SUFFIX

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COUNTS = (100, 200, 300)


def write_run(workdir, strategy, seed, accuracies, counts=COUNTS, name=None, seconds=None,
              balanced=None, **config):
  """A results.json as jaxdisp.main writes it (accuracies are fractions, one per round;
  ``seconds``: one (train, score, select) per round)."""
  cfg = {'seed': seed, 'strategy': strategy,
         'dataset': {'name': 'synthetic', 'source': 'synthetic'},
         'model': {'name': 'small_cnn', 'width': 8, 'dropout': 0.0},
         'train': {'epochs': 10, 'lr_milestones': [0.6, 0.8]},
         'al': {'initial_size': 100, 'budget': 100, 'rounds': 2, 'pool_subset': 0}}
  for key, value in config.items():
    group, leaf = key.split('__')
    cfg[group][leaf] = value
  seconds = seconds or [(1.0, 0.0, 0.0)] * len(accuracies)
  doc = {'config': cfg, 'dataset': {'name': 'synthetic'},
         'rounds': [{'round': r, 'num_labeled': n, 'test_accuracy': a, 'selected': [],
                     'seconds': dict(zip(('train', 'score', 'select'), sec))}
                    for r, (n, a, sec) in enumerate(zip(counts, accuracies, seconds))]}
  for r, b in zip(doc['rounds'], balanced or ()):
    r['balanced_accuracy'] = b
  run_dir = os.path.join(workdir, name or f'{strategy}-seed{seed}')
  os.makedirs(run_dir, exist_ok=True)
  with open(os.path.join(run_dir, 'results.json'), 'w') as f:
    json.dump(doc, f)
  return run_dir


# Display names and directions of the scores the fixtures write (the report knows none of them).
LABELS = {'least_confidence': 'least confidence', 'bald': 'BALD',
          'margin_dynamics': 'margin dynamics'}
LOWEST = ('margin', 'margin_dynamics')


def write_diag(run_dir, round_, ids, correct, legacy=False, **scores):
  """A diagnostics file: ``ids``, ``correct`` and one float32 array per score (``None``: left
  out) in the order given. The current format records each score's name, display name and
  direction (``score_names`` / ``score_labels`` / ``score_highest``); ``legacy`` writes a file
  of before that, without them."""
  scores = {k: np.asarray(v, np.float32) for k, v in scores.items() if v is not None}
  arrays = dict(ids=np.asarray(ids, np.int64), correct=np.asarray(correct, bool), **scores)
  if not legacy:
    arrays.update(score_names=np.array(list(scores), str),
                  score_labels=np.array([LABELS.get(k, k) for k in scores], str),
                  score_highest=np.array([k not in LOWEST for k in scores], bool))
  os.makedirs(os.path.join(run_dir, 'diagnostics'), exist_ok=True)
  np.savez(os.path.join(run_dir, 'diagnostics', f'round_{round_}.npz'), **arrays)


def md_table(text, first_header):
  """Rows (lists of stripped cells) of the markdown table whose header starts ``first_header``."""
  lines = text.splitlines()
  start = next(i for i, l in enumerate(lines) if l.startswith(f'| {first_header} |'))
  rows = []
  for line in lines[start:]:
    if not line.startswith('|'):
      break
    rows.append([c.strip() for c in line.strip().strip('|').split('|')])
  return rows[0], rows[2:]  # header, body (without the |---| line)


def hand_mean_std(values):
  """Mean and sample std (ddof=1; None for one value), in plain Python."""
  mean = sum(values) / len(values)
  if len(values) < 2:
    return mean, None
  return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def hand_cell(values, digits=2):
  mean, std = hand_mean_std(values)
  return f'{mean:.{digits}f}' + ('' if std is None else f' ± {std:.{digits}f}')


# Test accuracy in % per seed: {strategy: {seed: [acc at 100, 200, 300 (, 400)]}}.
ACC = {
    'random': {0: [40, 50, 60], 1: [42, 53, 61], 2: [44, 50, 65]},  # final mean 62
    'dispersion': {0: [43, 56, 71], 1: [44, 57, 68], 2: [45, 58, 68]},  # 44, 57, 69
    'entropy': {0: [41, 55, 60], 1: [43, 57]},  # seed 1 stopped after 2 rounds; never reaches 62
    'margin': {0: [63, 64, 66]},  # above 62 at its first point
    'least_confidence': {0: [55, 65, 60]},  # first crossing between 100 and 200
    'coreset': {0: [61, 59, 63]},  # dips, then crosses between 200 and 300
    'bald': {0: [40, 50, 60, 64]},  # 400 labels: crosses after random's final count
}


@pytest.fixture
def sweep_dir(tmp_path):
  for strategy, seeds in ACC.items():
    for seed, accs in seeds.items():
      write_run(tmp_path, strategy, seed, [a / 100 for a in accs],
                counts=(100, 200, 300, 400)[:len(accs)])
  return tmp_path


def test_accuracy_table_matches_hand_computation(sweep_dir):
  path = report.write_report(str(sweep_dir))
  assert path == str(sweep_dir / 'report' / 'report.md')
  text = open(path).read()
  assert 'sample standard deviation' in text and 'ddof=1' in text
  header, body = md_table(text, 'labels')
  order = ['dispersion', 'random', 'entropy', 'margin', 'least_confidence', 'bald', 'coreset']
  assert header == ['labels'] + [f'{s} ({len(ACC[s])} seed{"s" * (len(ACC[s]) > 1)})'
                                 for s in order]
  assert [row[0] for row in body] == ['100', '200', '300', '400']
  for r, row in enumerate(body):
    for s, cell in zip(order, row[1:]):
      values = [accs[r] for accs in ACC[s].values() if len(accs) > r]
      if not values:
        assert cell == '-'
        continue
      expected = hand_cell(values)
      if len(values) < len(ACC[s]):
        expected += f' (n={len(values)})'
      assert cell == expected, (s, r)
  # A few cells written out, to pin the hand computation itself.
  cells = {(row[0], s): c for row in body for s, c in zip(order, row[1:])}
  assert cells['100', 'random'] == '42.00 ± 2.00'  # sqrt((4 + 0 + 4) / 2) = 2
  assert cells['200', 'random'] == '51.00 ± 1.73'  # sqrt((1 + 4 + 1) / 2) = 1.732
  assert cells['300', 'random'] == '62.00 ± 2.65'  # sqrt((4 + 1 + 9) / 2) = 2.646
  assert cells['300', 'dispersion'] == '69.00 ± 1.73'  # sqrt((4 + 1 + 1) / 2)
  assert cells['300', 'entropy'] == '60.00 (n=1)'  # one seed: no std
  assert cells['200', 'entropy'] == '56.00 ± 1.41'  # sqrt((1 + 1) / 1)
  assert cells['400', 'random'] == '-' and cells['400', 'bald'] == '64.00'
  png = sweep_dir / 'report' / 'learning_curves.png'
  assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n' and png.stat().st_size > 5000
  assert sorted(os.listdir(sweep_dir / 'report')) == ['learning_curves.png', 'report.md']


def test_labels_saved_interpolates_the_mean_curve(sweep_dir):
  """``statistics.labels_saved``: where each mean curve reaches random's final mean accuracy
  (the report now prints the per-seed form; the mean-curve form stays in the API)."""
  (final_n, target), saved = report.labels_saved(report.curves(report.load_runs(str(sweep_dir))))
  assert (final_n, round(target, 2)) == (300, 62.0)  # random's final mean accuracy, 62% at 300
  got = {sv.strategy: sv for sv in saved}
  assert 'random' not in got
  # dispersion: means 44, 57, 69 -> 200 + (62 - 57) / (69 - 57) * 100 = 241.67; 300 - 241.67
  assert (got['dispersion'].reaches_at, got['dispersion'].saved) == pytest.approx((241.67, 58.33),
                                                                                   abs=0.005)
  # margin is at 63 >= 62 at its first point (100 labels)
  assert (got['margin'].reaches_at, got['margin'].saved) == (100.0, 200.0)
  # least_confidence 55, 65, 60: first crossing 100 + (62 - 55) / (65 - 55) * 100 = 170
  assert (got['least_confidence'].reaches_at, got['least_confidence'].saved) == pytest.approx(
      (170.0, 130.0))
  # coreset 61, 59, 63: 200 + (62 - 59) / (63 - 59) * 100 = 275
  assert (got['coreset'].reaches_at, got['coreset'].saved) == pytest.approx((275.0, 25.0))
  # bald 40, 50, 60, 64: 300 + (62 - 60) / (64 - 60) * 100 = 350: more labels than random
  assert (got['bald'].reaches_at, got['bald'].saved) == pytest.approx((350.0, -50.0))
  # entropy: means 42, 56, 60 (n=1): never reaches 62
  assert got['entropy'].reaches_at is None and got['entropy'].best == pytest.approx(60.0)
  cs = report.curves(report.load_runs(str(sweep_dir)))
  assert report.labels_to_reach(cs['random'].labeled, cs['random'].mean, target) == 300.0


def test_labels_saved_notes_a_non_monotonic_random_and_missing_random(tmp_path):
  write_run(tmp_path, 'random', 0, [0.50, 0.60, 0.55])
  write_run(tmp_path, 'dispersion', 0, [0.50, 0.54, 0.58])
  cs = report.curves(report.load_runs(str(tmp_path)))
  (final_n, target), saved = report.labels_saved(cs)
  # random reaches 55 between 100 (50) and 200 (60): 150 labels
  assert report.labels_to_reach(cs['random'].labeled, cs['random'].mean, target) == pytest.approx(
      150.0)
  # dispersion 50, 54, 58: 200 + (55 - 54) / (58 - 54) * 100 = 225
  assert saved[0].strategy == 'dispersion' and final_n == 300
  assert (saved[0].reaches_at, saved[0].saved) == pytest.approx((225.0, 75.0))
  assert report.labels_to_reach([100, 200], [50.0, 60.0], 60.0) == 200.0
  assert report.labels_to_reach([100, 200], [50.0, 60.0], 60.5) is None
  other = tmp_path / 'other'
  write_run(other, 'dispersion', 0, [0.5, 0.6, 0.7])
  assert 'No `random` runs: skipped.' in open(report.write_report(str(other))).read()


def test_labels_saved_per_seed_with_an_interval_only_where_aulc_differs(tmp_path):
  # COUNTS 100, 200, 300; random ends at 60, 62, 58 on seeds 0, 1, 2.
  acc = {'random': {0: [50, 55, 60], 1: [50, 57, 62], 2: [50, 53, 58]},
         # each seed crosses its random's final accuracy between 200 and 300 labels:
         # seed 0: 200 + (60 - 58) / (66 - 58) * 100 = 225; seed 1: 200 + (62 - 59) / (65 - 59)
         # * 100 = 250; seed 2: 200 + (58 - 56) / (64 - 56) * 100 = 225 -> saved 75, 50, 75
         'dispersion': {0: [50, 58, 66], 1: [50, 59, 65], 2: [50, 56, 64]},
         'entropy': {0: [50, 56, 59], 1: [50, 56, 63], 2: [50, 54, 57]},  # AULC not different
         # AULC above random, but seed 1 never reaches 62
         'margin': {0: [50, 57, 61], 1: [50, 60, 61], 2: [50, 55.5, 59.5]},
         'bald': {0: [52, 56, 61], 1: [51, 58, 63], 2: [52, 54, 59]}}  # its own round-0 model
  for strategy, seeds in acc.items():
    for seed, a in seeds.items():
      write_run(tmp_path, strategy, seed, [v / 100 for v in a])
  text = open(report.write_report(str(tmp_path))).read()
  _, body = md_table(text, 'strategy | paired seeds | labels saved')
  got = {row[0]: row[1:] for row in body}
  # 75, 50, 75: mean 66.67, s = 14.43, t(0.975, 2) = 4.302653 -> half-width 35.86
  half = 4.302653 * np.std([75, 50, 75], ddof=1) / math.sqrt(3)
  assert got['dispersion'] == ['3', '+67', f'[{66.667 - half:+.0f}, {66.667 + half:+.0f}]',
                               f'{100 * 66.667 / 300:+.1f}%']
  assert got['entropy'][1] == 'not printed: Δ AULC does not exclude 0'
  assert got['margin'][1] == "1 of 3 seeds never reach random's final accuracy"
  _, paired = md_table(text, 'strategy | paired seeds | Δ AULC')
  names = [row[0] for row in paired]
  assert 'bald †' in names and 'dispersion' in names  # bald's round-0 accuracy differs
  assert 'Not the same round-0 model as random' in text and '(bald train' in text
  assert {row[0]: row[6] for row in paired}['entropy'] == ''  # no verdict word without a result
  other = tmp_path / 'other'
  write_run(other, 'dispersion', 0, [0.5, 0.6, 0.7])
  assert 'No `random` runs (or no common range of labels): skipped.' in open(
      report.write_report(str(other))).read()


def test_penalty_matrix_by_hand(tmp_path):
  # Rounds 1 and 2 are compared (R = 2). dispersion - random: round 1 d = 3, 4, 5 (p < 0.05),
  # round 2 d = 5, 6, 7 (p < 0.05) -> P[dispersion, random] = 1. entropy - random: round 1
  # d = 1, -1, 0.5 (no), round 2 d = 2, 2.5, 3 (p = 0.013) -> 0.5. dispersion - entropy: round 1
  # d = 2, 5, 4.5 (p = 0.07, no), round 2 d = 3, 3.5, 4 (p = 0.013) -> 0.5.
  acc = {'random': {0: [50, 55, 60], 1: [50, 55, 60], 2: [50, 55, 60]},
         'dispersion': {0: [50, 58, 65], 1: [50, 59, 66], 2: [50, 60, 67]},
         'entropy': {0: [50, 56, 62], 1: [50, 54, 62.5], 2: [50, 55.5, 63]}}
  for strategy, seeds in acc.items():
    for seed, a in seeds.items():
      write_run(tmp_path, strategy, seed, [v / 100 for v in a])
  for d in ([3, 4, 5], [5, 6, 7], [2, 2.5, 3], [3, 3.5, 4]):
    assert stats.ttest_1samp(d, 0).pvalue < 0.05
  for d in ([1, -1, 0.5], [2, 5, 4.5]):
    assert stats.ttest_1samp(d, 0).pvalue > 0.05
  runs = report.load_runs(str(tmp_path))
  names, p, rounds = report.statistics.penalty_matrix(runs)
  want = {('dispersion', 'random'): 1.0, ('entropy', 'random'): 0.5,
          ('dispersion', 'entropy'): 0.5}
  assert rounds == 2
  for i, a in enumerate(names):
    for j, b in enumerate(names):
      assert p[i, j] == pytest.approx(want.get((a, b), 0.0)), (a, b)
  text = open(report.write_report(str(tmp_path))).read()
  assert '### Pairwise penalty matrix' in text and '| **beaten** |' in text


# ----------------------------------------------------------------------------- uncertainty
# Plain references, independent of report.py.

def brute_auroc(score, positive):
  """P(s+ > s-) + 1/2 P(s+ = s-), counted over every (positive, negative) pair."""
  pos = [float(s) for s, p in zip(score, positive) if p]
  neg = [float(s) for s, p in zip(score, positive) if not p]
  wins = 0.0
  for a in pos:
    for b in neg:
      wins += 1.0 if a > b else 0.5 if a == b else 0.0
  return wins / (len(pos) * len(neg))


def brute_average_precision(score, positive):
  """sum (R_n - R_{n-1}) P_n over the distinct scores, highest first: a tied block at once."""
  total = sum(bool(p) for p in positive)
  ap, last_recall = 0.0, 0.0
  for threshold in sorted(set(float(s) for s in score), reverse=True):
    chosen = [bool(p) for s, p in zip(score, positive) if float(s) >= threshold]
    recall, precision = sum(chosen) / total, sum(chosen) / len(chosen)
    ap += (recall - last_recall) * precision
    last_recall = recall
  return ap


def brute_top_k(score, correct, percent, highest):
  """Expected accuracy over a uniformly random order of every tie: sample i is in the top k with
  probability (places left after the strictly more uncertain) / (samples tied with i)."""
  size = len(score)
  k = max(1, math.ceil(percent * size / 100 - 1e-9))
  u = [(-math.inf if math.isnan(float(s)) else float(s) if highest else -float(s))
       for s in score]
  expected = 0.0
  for i in range(size):
    above = sum(1 for j in range(size) if u[j] > u[i])
    tied = sum(1 for j in range(size) if u[j] == u[i])
    expected += bool(correct[i]) * min(max(k - above, 0), tied) / tied
  return expected / k


def test_auroc_and_average_precision_by_hand_and_against_brute_force():
  score = [0.9, 0.9, 0.5, 0.1, 0.1]
  positive = [True, False, True, False, False]
  # Positive 0.9: above both 0.1 negatives, tied with the 0.9 one: 2.5 of 3; positive 0.5: 2 of 3.
  assert report.auroc(score, positive) == 4.5 / 6
  # 0.9: precision 1/2 at recall 1/2; 0.5: precision 2/3 at recall 1; 0.1: no recall gained.
  assert report.average_precision(score, positive) == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3,
                                                                    abs=1e-15)
  order = [3, 0, 4, 2, 1]  # the order of the samples does not matter, ties included
  assert report.auroc(np.take(score, order), np.take(positive, order)) == 4.5 / 6
  assert report.average_precision(np.take(score, order), np.take(positive, order)) == (
      report.average_precision(score, positive))
  assert math.isnan(report.auroc([1, 2], [True, True]))
  assert math.isnan(report.average_precision([1, 2], [False, False]))
  with pytest.raises(ValueError, match='NaN'):
    report.auroc([1.0, np.nan], [True, False])
  rng = np.random.default_rng(0)
  for size, levels in ((7, 2), (50, 3), (200, 11), (300, 1000)):  # few levels = big tie blocks
    s = rng.integers(0, levels, size) / levels
    p = rng.random(size) < 0.3
    p[:2] = True, False
    assert report.auroc(s, p) == pytest.approx(brute_auroc(s, p), abs=1e-12)
    assert report.average_precision(s, p) == pytest.approx(brute_average_precision(s, p),
                                                           abs=1e-12)


def test_topk_accuracy_counts_tied_scores_at_their_expected_value():
  rng = np.random.default_rng(1)
  for size, levels in ((20, 2), (150, 11), (333, 4), (100, 1000)):
    s = (rng.integers(0, levels, size) / levels).astype(np.float32)
    s[rng.random(size) < 0.05] = np.nan  # NaN ranks last
    ok = rng.random(size) < 0.6
    for p in (1, 5, 10, 50):
      for highest in (True, False):
        assert report.topk_accuracy_expected(s, ok, p, highest) == pytest.approx(
            brute_top_k(s, ok, p, highest), abs=1e-12)
  # All tied: the whole-pool accuracy for every k.
  assert report.topk_accuracy_expected(np.zeros(20), [True] * 15 + [False] * 5, 1) == 0.75
  assert [report.top_k(p, 150) for p in (1, 5, 10)] == [2, 8, 15]
  assert [report.top_k(p, 20) for p in (1, 5, 10)] == [1, 1, 2]


def naive_risk_coverage(conf, correct, coverages=(80, 90, 95)):
  """AURC, E-AURC and risk@c by a plain loop over the coverages: sort by confidence (most
  confident first, distinct scores), and for each i the error rate of the first i."""
  order = sorted(range(len(conf)), key=lambda j: -conf[j])
  risks, errors = [], 0
  for i, j in enumerate(order, 1):
    errors += not correct[j]
    risks.append(errors / i)
  n, n_wrong = len(conf), sum(not c for c in correct)
  ideal = [max(0, i - (n - n_wrong)) / i for i in range(1, n + 1)]
  at = [risks[math.ceil(c * n / 100) - 1] for c in coverages]
  return sum(risks) / n, sum(risks) / n - sum(ideal) / n, at


def test_risk_coverage_against_a_naive_loop_and_ties_against_every_order():
  rng = np.random.default_rng(3)
  for size in (7, 50, 333):
    u = rng.permutation(size).astype(np.float64)  # distinct uncertainty scores
    ok = rng.random(size) < 0.7
    got = report.detection.risk_coverage(u, ok)  # highest = most uncertain = kept last
    aurc, eaurc, at = naive_risk_coverage(list(-u), list(ok))
    assert got['aurc'] == pytest.approx(aurc, abs=1e-12)
    assert got['eaurc'] == pytest.approx(eaurc, abs=1e-12)
    assert got['risk'] == pytest.approx(at, abs=1e-12)
    low = report.detection.risk_coverage(-u, ok, highest=False)  # the same order, lowest end
    assert low['aurc'] == pytest.approx(aurc, abs=1e-12)
  # The ideal order has E-AURC 0; a perfect detector gives it.
  ok = np.array([True] * 6 + [False] * 4)
  assert report.detection.risk_coverage(np.arange(10.0), ok)['eaurc'] == pytest.approx(0.0)
  # Ties: the mean over every order of the tied samples (6! orders of a 6-sample pool).
  import itertools  # pylint: disable=g-import-not-at-top
  u = np.array([0.5, 0.5, 0.5, 0.2, 0.9, 0.9])
  ok = np.array([True, False, True, True, False, True])
  sums = np.zeros(5)
  perms = list(itertools.permutations(range(6)))
  for perm in perms:  # break ties by a random order: a small offset by the permutation's rank
    tie = u + 1e-6 * np.array(perm)
    aurc, eaurc, at = naive_risk_coverage(list(-tie), list(ok))
    sums += [aurc, eaurc, *at]
  got = report.detection.risk_coverage(u, ok)
  assert [got['aurc'], got['eaurc'], *got['risk']] == pytest.approx(sums / len(perms), abs=1e-12)


def tied_pool(groups, rng):
  """(ids, score, correct) of a pool made of tie groups [(score, size, correct)], the correct
  samples of each group on its lowest ids (so a ranking by ascending id would pick them first)."""
  ids, score, correct, next_id = [], [], [], 0
  for value, size, right in groups:
    ids += list(range(next_id, next_id + size))
    score += [value] * size
    correct += [True] * right + [False] * (size - right)
    next_id += size
  order = rng.permutation(next_id)  # stored in a scrambled order
  return (np.asarray(ids)[order], np.asarray(score, np.float32)[order],
          np.asarray(correct)[order])


def test_top_k_with_large_tie_groups_matches_the_expected_value_by_hand(tmp_path):
  """The acceptance test: diagnostics with large tie groups, top-k% against a hand computation."""
  rng = np.random.default_rng(2)
  # 200 pool samples: k = 2 (top 1%), 10 (5%), 20 (10%).
  # seed 0: 10 at 0.5 (3 right), 60 at 0.4 (24 right), 130 at 0 (100 right):
  #   k = 2: 2 * 3/10 = 0.6 right -> 30%; k = 10: the 0.5 block, 3 -> 30%;
  #   k = 20: 3 + 10 * 24/60 = 7 -> 35%.
  # seed 1: 6 at 0.6 (0 right), 50 at 0.45 (20 right), 144 at 0.05 (100 right):
  #   k = 2: 0%; k = 10: 4 * 20/50 = 1.6 -> 16%; k = 20: 14 * 20/50 = 5.6 -> 28%.
  pools = {0: tied_pool([(0.5, 10, 3), (0.4, 60, 24), (0.0, 130, 100)], rng),
           1: tied_pool([(0.6, 6, 0), (0.45, 50, 20), (0.05, 144, 100)], rng)}
  hand = {0: [30.0, 30.0, 35.0], 1: [0.0, 16.0, 28.0]}
  for seed, (ids, disp, ok) in pools.items():
    got = [100 * report.topk_accuracy_expected(disp, ok, p) for p in (1, 5, 10)]
    assert got == pytest.approx(hand[seed], abs=1e-9)
    # The old rule (ties by ascending id) picked the right answers of each block first: seed 0's
    # top 1% was 100% right instead of the expected 30%.
    by_id = np.lexsort((ids, -disp))[:2]
    assert ok[by_id].all() == (seed == 0)
    run = write_run(tmp_path, 'dispersion', seed, [0.5, 0.6, 0.7])
    # margin = 1 - dispersion ranks the same way (lowest first); entropy = dispersion.
    write_diag(run, 0, ids, dispersion=disp, margin=1 - disp, entropy=disp, correct=ok)
  # AUROC of seed 0 by hand: mistakes 7 / 36 / 30 in the three blocks, right answers 3 / 24 / 100;
  # pairs won (ties half): 7 * (124 + 1.5) + 36 * (100 + 12) + 30 * 50 = 6410.5 of 73 * 127.
  ids, disp, ok = pools[0]
  assert report.auroc(disp, ~ok) == pytest.approx(6410.5 / (73 * 127), abs=1e-12)
  text = open(report.write_report(str(tmp_path))).read()
  _, body = md_table(text, 'strategy | round | score | top 1%')
  rows = {r[2]: r[3:] for r in body}
  # Mean ± sample std over the two seeds: (30, 0) -> 15 ± 21.21; (30, 16) -> 23 ± 9.90;
  # (35, 28) -> 31.5 ± 4.95; whole pool (127 and 120 of 200 right) -> 61.75 ± 2.47.
  expected = ['15.00 ± 21.21', '23.00 ± 9.90', '31.50 ± 4.95', '61.75 ± 2.47', '2']
  assert rows == {'dispersion (highest)': expected, 'margin (lowest)': expected,
                  'entropy (highest)': expected}
  assert [hand_cell([a, b]) for a, b in zip(hand[0], hand[1])] == expected[:3]


def test_uncertainty_tables_match_hand_computation(sweep_dir):
  n = 20  # k = ceil(0.2) = 1 (top 1%), ceil(1.0) = 1 (5%), 2 (10%)
  # dispersion-seed0, round 0: ids stored in descending order.
  ids = np.arange(n)[::-1]
  by_id = lambda d, default: [d.get(int(i), default) for i in ids]
  write_diag(sweep_dir / 'dispersion-seed0', 0, ids,
             dispersion=by_id({5: 0.9, 3: 0.9, 7: 0.5}, 0.1),
             margin=by_id({10: 0.01, 11: 0.01}, 0.5),
             entropy=by_id({0: 2.0}, 0.1),
             correct=[int(i) not in (3, 11, 12, 13) for i in ids])
  # dispersion-seed1, round 0: ids ascending; everything but dispersion tied.
  ids1 = np.arange(n)
  write_diag(sweep_dir / 'dispersion-seed1', 0, ids1,
             dispersion=[1.0 if i == 2 else 0.0 for i in ids1], margin=np.full(n, 0.3),
             entropy=np.ones(n), correct=[i not in (2, 4, 6, 8) for i in ids1])
  # random-seed0, round 0: no prediction history (no dispersion), with BALD.
  write_diag(sweep_dir / 'random-seed0', 0, ids1, margin=np.full(n, 0.2), entropy=np.full(n, 0.5),
             bald=[0.8 if i == 9 else 0.1 for i in ids1], correct=[i not in (0, 9) for i in ids1])
  # dispersion-seed0, round 1: 150 random samples with many ties, against the references;
  # k = ceil(1.5) = 2, ceil(7.5) = 8, ceil(15) = 15.
  rng = np.random.default_rng(0)
  big = dict(ids=rng.permutation(1000)[:150], dispersion=rng.integers(0, 11, 150) / 10,
             margin=rng.random(150).round(2), entropy=rng.random(150),
             correct=rng.random(150) < 0.6)
  write_diag(sweep_dir / 'dispersion-seed0', 1, **big)
  # dispersion-seed1, round 1: a broken file (no 'correct'): skipped and named in the report.
  np.savez(sweep_dir / 'dispersion-seed1' / 'diagnostics' / 'round_1.npz', ids=ids1,
           dispersion=np.zeros(n), margin=np.zeros(n), entropy=np.zeros(n))

  text = open(report.write_report(str(sweep_dir))).read()
  _, body = md_table(text, 'strategy | round | score | AUROC')
  auc = {(r[0], int(r[1]), r[2]): r[3:] for r in body}
  _, body = md_table(text, 'strategy | round | score | top 1%')
  top = {(r[0], int(r[1]), r[2]): r[3:] for r in body}
  # By hand, per run (mistakes are the positives; ties count half / at their expected value).
  # seed0 r0, mistakes {3, 11, 12, 13}, 16 right answers:
  #  dispersion: 3 and 5 (right) tied at 0.9, 7 (right) at 0.5, the rest at 0.1.
  #   AUROC (15 + 0.5 + 3 * 14 / 2) / 64 = 36.5 / 64; AP 0.9 block: P 1/2 at R 1/4, then
  #   0.1 block: P 4/20 at R 1 -> 0.25 * 0.5 + 0.75 * 0.2 = 0.275.
  #   top-1: 1 of the 2-block, 1/2 right -> 50; top-2: the whole block -> 50.
  #  margin: 10 (right) and 11 (wrong) lowest: AUROC (15 + 0.5 + 3 * 15 / 2) / 64 = 38 / 64;
  #   AP 0.275 likewise; top 50 / 50 / 50.
  #  entropy: 0 (right) alone on top, the other 19 tied (15 right): AUROC (4 * 15 / 2) / 64 =
  #   30 / 64; AP 0 + 1 * 4/20 = 0.2; top-1 100; top-2 (1 + 15/19) / 2 = 17/19.
  # seed1 r0, mistakes {2, 4, 6, 8}:
  #  dispersion: 2 (wrong) alone on top: AUROC (16 + 3 * 16 / 2) / 64 = 40 / 64; AP
  #   0.25 * 1 + 0.75 * 0.2 = 0.4; top-1 0; top-2 (0 + 16/19) / 2 = 8/19.
  #  margin, entropy: all tied: AUROC 0.5, AP 0.2, top 80 everywhere.
  per_run = {
      'dispersion (highest)': ([36.5 / 64, 40 / 64], [0.275, 0.4], [[50, 50, 50],
                                                                    [0, 0, 800 / 19]]),
      'margin (lowest)': ([38 / 64, 0.5], [0.275, 0.2], [[50, 50, 50], [80, 80, 80]]),
      'entropy (highest)': ([30 / 64, 0.5], [0.2, 0.2], [[100, 100, 1700 / 19], [80, 80, 80]]),
  }
  for score, (aurocs, aps, tops) in per_run.items():
    assert auc['dispersion', 0, score] == [hand_cell(aurocs, 3), hand_cell(aps, 3),
                                           '0.200 ± 0.000', '2'], score
    assert top['dispersion', 0, score] == [hand_cell([a[j] for a in tops]) for j in range(3)] + [
        '80.00 ± 0.00', '2'], score
  assert auc['dispersion', 0, 'dispersion (highest)'][:2] == ['0.598 ± 0.039', '0.338 ± 0.088']
  assert top['dispersion', 0, 'entropy (highest)'][2] == '84.74 ± 6.70'  # 89.47 and 80
  # random r0: no dispersion row; margin/entropy all tied: 18 of 20 right everywhere, AUROC 0.5,
  # AP = the error rate 0.1. BALD: 9 (wrong) alone on top, the other 19 tied (18 right):
  # AUROC (18 + 18 / 2) / 36 = 0.75; AP 0.5 * 1 + 0.5 * 2/20 = 0.55; top-1 0, top-2 9/19.
  assert ('random', 0, 'dispersion (highest)') not in auc
  assert auc['random', 0, 'margin (lowest)'] == ['0.500', '0.100', '0.100', '1']
  assert auc['random', 0, 'entropy (highest)'] == ['0.500', '0.100', '0.100', '1']
  assert auc['random', 0, 'BALD (highest)'] == ['0.750', '0.550', '0.100', '1']
  assert top['random', 0, 'margin (lowest)'] == ['90.00', '90.00', '90.00', '90.00', '1']
  assert top['random', 0, 'BALD (highest)'] == ['0.00', '0.00', f'{900 / 19:.2f}', '90.00', '1']
  assert not any(k[0] == 'entropy' for k in auc)  # entropy runs have no diagnostics
  for score, column, highest in (('dispersion (highest)', 'dispersion', True),
                                 ('margin (lowest)', 'margin', False),
                                 ('entropy (highest)', 'entropy', True)):
    s = np.asarray(big[column], np.float32)  # as stored
    u = s if highest else -s
    wrong = ~big['correct']
    assert auc['dispersion', 1, score] == [
        f'{brute_auroc(u, wrong):.3f}', f'{brute_average_precision(u, wrong):.3f}',
        f'{wrong.mean():.3f}', '1'], score
    assert top['dispersion', 1, score] == [
        f'{100 * brute_top_k(s, big["correct"], p, highest):.2f}' for p in (1, 5, 10)] + [
            f'{100 * big["correct"].mean():.2f}', '1'], score
  assert 'dispersion-seed1/diagnostics/round_1.npz' in text and 'correct' in text
  assert 'no order (dataset id, file order) decides' in text
  out = sweep_dir / 'report'
  assert sorted(os.listdir(out)) == ['dispersion_hist_dispersion.png', 'learning_curves.png',
                                     'report.md']
  assert (out / 'dispersion_hist_dispersion.png').stat().st_size > 5000
  assert '(dispersion_hist_dispersion.png)' in text


def diag_rows(text):
  """{(strategy, round, score cell): cells} of the AUROC table and of the top-k% table."""
  tables = []
  for header in ('strategy | round | score | AUROC', 'strategy | round | score | top 1%'):
    _, body = md_table(text, header)
    tables.append({(r[0], int(r[1]), r[2]): r[3:] for r in body})
  return tables


def test_current_and_legacy_diagnostics_files_give_the_same_tables(tmp_path):
  """A file written before the scores were recorded in it: every float array is a score, named
  by its key, the highest most uncertain except margin and margin_dynamics; a score of no
  prediction history was NaN there and is left out of the current file."""
  rng = np.random.default_rng(3)
  n = 60
  ids, ok = rng.permutation(n), rng.random(n) < 0.7
  scores = dict(dispersion=rng.integers(0, 5, n) / 4, margin=rng.random(n),
                entropy=rng.random(n), flips=rng.integers(0, 3, n).astype(float),
                margin_dynamics=rng.normal(size=n))
  bald = rng.random(n)
  texts = {}
  for kind in ('current', 'legacy'):
    legacy = kind == 'legacy'
    run = write_run(tmp_path / kind, 'dispersion', 0, [0.5, 0.6, 0.7])
    write_diag(run, 0, ids, ok, legacy, **scores)
    run = write_run(tmp_path / kind, 'random', 0, [0.5, 0.6, 0.7])
    write_diag(run, 0, ids, ok, legacy, dispersion=np.full(n, np.nan) if legacy else None,
               margin=scores['margin'], entropy=scores['entropy'], bald=bald)
    texts[kind] = open(report.write_report(str(tmp_path / kind))).read()
  current, legacy = diag_rows(texts['current']), diag_rows(texts['legacy'])
  # The legacy file names BALD by its key; everything else is the same, row for row.
  rename = lambda t: {(s, r, c.replace('bald', 'BALD')): v for (s, r, c), v in t.items()}
  assert [list(t) for t in current] == [list(rename(t)) for t in legacy]
  assert current == [rename(t) for t in legacy]
  wrong = ~ok
  for name, label, highest in (('dispersion', 'dispersion', True), ('margin', 'margin', False),
                               ('flips', 'flips', True),
                               ('margin_dynamics', 'margin dynamics', False)):
    u = np.asarray(scores[name], np.float32) * (1 if highest else -1)
    cell = f'{label} ({"highest" if highest else "lowest"})'
    assert current[0]['dispersion', 0, cell][:2] == [
        f'{brute_auroc(u, wrong):.3f}', f'{brute_average_precision(u, wrong):.3f}'], name
    assert current[1]['dispersion', 0, cell][0] == f'{100 * brute_top_k(u, ok, 1, True):.2f}'
  assert [k[2] for k in current[0] if k[0] == 'random'] == [
      'margin (lowest)', 'entropy (highest)', 'BALD (highest)']
  assert current[0]['random', 0, 'BALD (highest)'][0] == f'{brute_auroc(bald, wrong):.3f}'
  # The prose lists the scores by direction, in the order they first appear in the tables.
  assert ('highest dispersion / entropy / flips / BALD, lowest margin / margin dynamics.'
          in texts['current'])
  for kind in texts:
    assert os.path.exists(tmp_path / kind / 'report' / 'dispersion_hist_dispersion.png')


def test_report_takes_names_labels_and_directions_from_the_file(tmp_path):
  """A score no part of jaxdisp knows, lowest most uncertain, first in its file's order."""
  rng = np.random.default_rng(4)
  n = 40
  ids, ok = np.arange(n), rng.random(n) < 0.5
  novel, entropy = rng.random(n), rng.random(n)
  run = write_run(tmp_path, 'random', 0, [0.5, 0.6, 0.7])
  os.makedirs(os.path.join(run, 'diagnostics'))
  np.savez(os.path.join(run, 'diagnostics', 'round_0.npz'), ids=ids, correct=ok,
           entropy=entropy.astype(np.float32), my_novelty=novel.astype(np.float32),
           unlisted=np.zeros(n, np.float32),  # not in score_names: not a score
           score_names=np.array(['my_novelty', 'entropy']),
           score_labels=np.array(['novelty (mine)', 'entropy']),
           score_highest=np.array([False, True]))
  text = open(report.write_report(str(tmp_path))).read()
  auc, top = diag_rows(text)
  assert list(auc) == [('random', 0, 'novelty (mine) (lowest)'), ('random', 0, 'entropy (highest)')]
  assert auc['random', 0, 'novelty (mine) (lowest)'][0] == f'{brute_auroc(-novel, ~ok):.3f}'
  assert top['random', 0, 'novelty (mine) (lowest)'][2] == (
      f'{100 * brute_top_k(novel.astype(np.float32), ok, 10, False):.2f}')
  assert 'highest entropy, lowest novelty (mine).' in text
  assert 'no dispersion histogram' in text and not os.path.exists(
      tmp_path / 'report' / 'dispersion_hist_random.png')


def test_score_order_merges_the_order_of_every_file():
  order = []
  report.detection.merge_order(order, ['margin', 'entropy'])
  report.detection.merge_order(order, ['dispersion', 'margin', 'bald', 'entropy', 'flips'])
  report.detection.merge_order(order, ['entropy', 'variability'])
  assert order == ['dispersion', 'margin', 'bald', 'entropy', 'variability', 'flips']


def test_files_with_incomplete_score_metadata_are_skipped_and_named(tmp_path):
  n = 10
  run = write_run(tmp_path, 'random', 0, [0.5, 0.6, 0.7])
  write_diag(run, 0, np.arange(n), np.arange(n) % 2 == 0, entropy=np.arange(n))
  folder = os.path.join(run, 'diagnostics')
  base = dict(ids=np.arange(n), correct=np.ones(n, bool), entropy=np.zeros(n, np.float32))
  np.savez(os.path.join(folder, 'round_1.npz'), **base, score_names=np.array(['entropy']))
  np.savez(os.path.join(folder, 'round_2.npz'), **base, score_names=np.array(['entropy', 'x']),
           score_labels=np.array(['entropy', 'x']), score_highest=np.array([True, True]))
  np.savez(os.path.join(folder, 'round_3.npz'), **base, score_names=np.array(['entropy']),
           score_labels=np.array(['entropy', 'x']), score_highest=np.array([True]))
  rows, _, problems = report.collect_diagnostics(report.load_runs(str(tmp_path)))
  assert [(r['round'], r['name'], r['score'], r['highest']) for r in rows] == [
      (0, 'entropy', 'entropy', True)]
  assert problems == [
      'random-seed0/diagnostics/round_1.npz: missing array(s) score_labels, score_highest',
      'random-seed0/diagnostics/round_2.npz: missing array(s) x',
      'random-seed0/diagnostics/round_3.npz: score_names, score_labels, score_highest must be '
      '1-D of one length']


def test_the_temporary_of_a_killed_write_is_removed_by_the_next_report(tmp_path):
  """jaxdisp.files.atomic_write names its temporary ``.<name>.<random><TMP_SUFFIX>``; a
  process killed before the rename leaves it behind, and the next report removes it."""
  write_run(tmp_path, 'random', 0, [0.5, 0.6, 0.7])
  out = tmp_path / 'report'
  os.makedirs(out)
  kill = ('import os, signal, sys\n'
          'from jaxdisp.files import atomic_write\n'
          'atomic_write(sys.argv[1], "torn", lambda: os.kill(os.getpid(), signal.SIGKILL))\n')
  proc = subprocess.run([sys.executable, '-c', kill, str(out / 'report.md')], cwd=REPO,
                        timeout=120)
  assert proc.returncode == -signal.SIGKILL
  left = os.listdir(out)
  assert len(left) == 1 and left[0].startswith('.report.md.'), left
  assert left[0].endswith(TMP_SUFFIX)
  assert report.main([str(tmp_path)]) == 0
  assert sorted(os.listdir(out)) == ['learning_curves.png', 'report.md']
  assert (out / 'report.md').read_text().startswith('# Active-learning report')


# ----------------------------------------------------------------------------- statistics

# t(0.975, df) as printed in t tables (6 decimals); df -> infinity: the normal's 1.959964.
T_TABLE = {1: 12.706205, 2: 4.302653, 3: 3.182446, 5: 2.570582, 10: 2.228139, 20: 2.085963,
           30: 2.042272, 10**7: 1.959964}


def test_t_quantiles_and_interval():
  for df, t in T_TABLE.items():
    assert report.t_quantile_975(df) == pytest.approx(t, abs=1e-6), df
  with pytest.raises(ValueError):
    report.t_quantile_975(0)
  mean, low, high = report.t_interval([1.0, 2.0, 6.0])  # mean 3, s = sqrt(7), n = 3
  half = T_TABLE[2] * math.sqrt(7) / math.sqrt(3)
  assert (mean, low, high) == pytest.approx((3.0, 3.0 - half, 3.0 + half), abs=1e-5)
  assert report.t_interval([2.0, 2.0]) == (2.0, 2.0, 2.0)  # no spread: a point, not NaN
  assert math.isnan(report.t_interval([1.0])[1]) and math.isnan(report.sample_std([1.0]))
  assert report.sample_std([1.0, 3.0]) == pytest.approx(math.sqrt(2))


def test_aulc_by_hand():
  assert report.aulc([100, 200, 300], [40, 50, 60]) == 50.0  # (40 + 2 * 50 + 60) / 4
  # [100, 250]: 45 * 100 + (50 + 55) / 2 * 50 = 7125, over 150.
  assert report.aulc([100, 200, 300], [40, 50, 60], 100, 250) == pytest.approx(47.5)
  assert report.aulc([300, 100, 200], [60, 40, 50]) == 50.0  # order of the points
  with pytest.raises(ValueError):
    report.aulc([100, 200], [1, 2], 100, 300)


AULC_ACC = {  # {strategy: {seed: (accuracies %, counts)}}
    'random': {0: [40, 50, 60], 1: [42, 53, 61], 2: [44, 50, 65]},
    'dispersion': {0: [43, 56, 71], 1: [44, 57, 68], 2: [45, 58, 68]},
    'entropy': {0: [41, 55, 60], 1: [43, 57, 59], 3: [40, 50, 52]},  # seed 3: no random pair
    'margin': {0: [63, 64, 66, 70]},  # goes on to 400 labels: cut at 300
}


def test_aulc_and_paired_differences_match_hand_computation(tmp_path):
  for strategy, seeds in AULC_ACC.items():
    for seed, accs in seeds.items():
      write_run(tmp_path, strategy, seed, [a / 100 for a in accs],
                counts=(100, 200, 300, 400)[:len(accs)])
  text = open(report.write_report(str(tmp_path))).read()
  assert 'from 100 to 300, divided by 200' in text and 'initial point (100 labels' in text
  assert 'runs end at 300, 400; the longer ones are cut at 300' in text
  _, body = md_table(text, 'strategy | seeds | AULC (%)')
  got = {r[0]: r[1:] for r in body}
  # AULC over [100, 300] = (a100 + 2 * a200 + a300) / 4 per run:
  # random 50, 52.25, 52.25; dispersion 56.5, 56.5, 57.25; entropy 52.75, 54, 48; margin 64.25.
  assert got['random'] == ['3', hand_cell([50, 52.25, 52.25])] == ['3', '51.50 ± 1.30']
  assert got['dispersion'] == ['3', hand_cell([56.5, 56.5, 57.25])] == ['3', '56.75 ± 0.43']
  assert got['entropy'] == ['3', hand_cell([52.75, 54, 48])]
  assert got['margin'] == ['1', '64.25']
  _, body = md_table(text, 'strategy | paired seeds')
  # the fixture's round-0 accuracies differ from random's: every strategy is flagged
  assert all(r[0].endswith(' †') for r in body)
  got = {r[0][:-2]: r[1:] for r in body}

  def interval(d, t):  # the 95% t interval by hand, t = t(0.975, n - 1)
    mean, std = hand_mean_std(d)
    half = t * std / math.sqrt(len(d))
    return f'{mean:+.2f}', f'[{mean - half:+.2f}, {mean + half:+.2f}]'

  # dispersion - random: AULC 6.5, 4.25, 5; at 300 labels 11, 7, 3; t(0.975, 2) = 4.302653.
  assert got['dispersion'][:6] == ['3', *interval([6.5, 4.25, 5.0], 4.302653),
                                   *interval([11, 7, 3], 4.302653), 'above']
  assert got['dispersion'][:3] == ['3', '+5.25', '[+2.40, +8.10]']
  # entropy - random, seeds 0 and 1: AULC 2.75, 1.75; at 300: 0, -2; t(0.975, 1) = 12.706205.
  assert got['entropy'][:6] == ['2', *interval([2.75, 1.75], 12.706205),
                                *interval([0, -2], 12.706205), '']
  # margin - random, seed 0: AULC 64.25 - 50; at 300: 66 - 60; one pair, no interval, no test.
  assert got['margin'] == ['1', '+14.25', '-', '+6.00', '-', '-', '-', '-', '-']
  assert 'random' not in got
  # p: t = mean / (s / sqrt(n)) by hand, two-sided, from the t distribution's tail; dispersion:
  # d = 6.5, 4.25, 5 -> mean 5.25, s = 1.1456, t = 7.937 on 2 df -> p = 0.0155; entropy: d =
  # 2.75, 1.75 -> mean 2.25, s = 0.7071, t = 4.5 on 1 df -> p = 0.1392. Holm over the two
  # (margin has no p): 2 x 0.0155 = 0.031, then max(0.031, 0.1392) = 0.1392.
  assert got['dispersion'][6] == '0.016' and got['dispersion'][7] == '0.031'
  assert got['entropy'][6:8] == ['0.14', '0.14']
  # MDE: the effect at which the noncentral t's power is 80%, checked by that power (written out
  # here from scipy's noncentral t) and against a Monte-Carlo of the paired t-test.
  for name, d in (('dispersion', [6.5, 4.25, 5.0]), ('entropy', [2.75, 1.75])):
    mde = float(got[name][8])
    n, sd = len(d), hand_mean_std(d)[1]
    assert mde == pytest.approx(report.statistics.min_detectable_effect(sd, n), abs=0.006)
    df, crit = n - 1, stats.t.ppf(0.975, n - 1)
    nc = report.statistics.min_detectable_effect(sd, n) * math.sqrt(n) / sd
    if n > 2:  # scipy's nct gives NaN at 1 degree of freedom and this large a noncentrality
      assert stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc) == pytest.approx(0.8)
    draws = np.random.default_rng(0).normal(report.statistics.min_detectable_effect(sd, n), sd,
                                            (20000, n))
    tstat = draws.mean(1) / (draws.std(1, ddof=1) / math.sqrt(n))
    assert np.mean(np.abs(tstat) > crit) == pytest.approx(0.8, abs=0.015)


def test_holm_adjustment_by_hand():
  # p = 0.01, 0.04, 0.03, NaN: sorted 0.01, 0.03, 0.04 of m = 3 -> 0.03, max(0.03, 0.06) = 0.06,
  # max(0.06, 0.04) = 0.06; NaN stays out of the family.
  got = report.statistics.holm([0.01, 0.04, 0.03, float('nan')])
  assert got[:3] == pytest.approx([0.03, 0.06, 0.06]) and math.isnan(got[3])
  assert report.statistics.holm([0.6, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1


def test_cost_table(tmp_path):
  # rounds 0, 1 queried (al.rounds = 2); round 2 only trains.
  write_run(tmp_path, 'dispersion', 0, [0.5, 0.6, 0.7], train__epochs=20,
            seconds=[(10.0, 1.0, 0.5), (12.0, 2.0, 0.5), (14.0, 0.0, 0.0)])
  write_run(tmp_path, 'dispersion', 1, [0.5, 0.6, 0.7], train__epochs=20,
            seconds=[(11.0, 1.0, 0.5), (13.0, 2.0, 0.5), (15.0, 0.0, 0.0)])
  write_run(tmp_path, 'random', 0, [0.5, 0.6, 0.7], train__epochs=20,
            seconds=[(8.0, 0.0, 0.1), (9.0, 0.0, 0.1), (10.0, 0.0, 0.0)])
  text = open(report.write_report(str(tmp_path))).read()
  _, body = md_table(text, 'strategy | pool passes per round')
  got = {r[0]: r[1:] for r in body}
  # train: (10 + 12 + 14 + 11 + 13 + 15) / 6 = 12.5; score: (1 + 2) * 2 / 4 = 1.5; select 0.5.
  assert got['dispersion'] == ['20 (T: one per recorded epoch, during training; none after)',
                               '12.50', '1.50', '0.50', '2']
  assert got['random'] == ['0', '9.00', '0.00', '0.10', '1']


def test_report_without_diagnostics_says_so(sweep_dir):
  text = open(report.write_report(str(sweep_dir), str(sweep_dir / 'elsewhere'))).read()
  assert 'No pool diagnostics' in text and 'skipped' in text
  assert not os.path.exists(sweep_dir / 'report')


def test_report_warns_when_runs_use_different_protocols(tmp_path):
  write_run(tmp_path, 'random', 0, [0.5, 0.6, 0.7])
  write_run(tmp_path, 'dispersion', 0, [0.5, 0.6, 0.7], train__epochs=20)
  text = open(report.write_report(str(tmp_path))).read()
  assert re.search(r'\*\*Warning\*\*: .*train\.epochs', text)
  assert 'model.' not in text.split('## Test accuracy')[0]


def test_report_refuses_runs_of_different_models_unless_told(tmp_path, capsys):
  """One table, one network: dropout for BALD only is refused in one line naming the keys."""
  write_run(tmp_path, 'random', 0, [0.5, 0.6, 0.7])
  write_run(tmp_path, 'random', 1, [0.5, 0.6, 0.7])
  write_run(tmp_path, 'bald', 0, [0.5, 0.6, 0.7], model__dropout=0.3,
            model__dropout_layers='network')
  assert report.main([str(tmp_path)]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert err == ['error: the runs use different models (model.dropout: 0.0 (random-seed0, '
                 'random-seed1), 0.3 (bald-seed0); model.dropout_layers: "head" (random-seed0, '
                 'random-seed1), "network" (bald-seed0)): every strategy of one table needs the '
                 'same model.* keys; rerun them with the same keys, or pass '
                 '--allow-mixed-models']
  assert not os.path.exists(tmp_path / 'report')
  runs = report.load_runs(str(tmp_path))
  assert report.mismatched_model_keys(runs, allow_mixed=True) == ['model.dropout',
                                                                  'model.dropout_layers']
  assert report.mismatched_model_keys([r for r in runs if r.strategy == 'random']) == []
  assert report.main([str(tmp_path), '--allow-mixed-models']) == 0
  text = (tmp_path / 'report' / 'report.md').read_text()
  assert re.search(r'\*\*Warning\*\*: .*model\.dropout, model\.dropout_layers', text)


def test_report_counts_model_keys_a_run_lacks_as_their_defaults(tmp_path):
  """Runs made before model.dropout_layers existed are the 'head' models they were; new
  strategies take their place in the registry's order."""
  write_run(tmp_path, 'badge', 0, [0.5, 0.6, 0.7], model__dropout=0.3)
  write_run(tmp_path, 'random', 0, [0.5, 0.6, 0.7], model__dropout=0.3)
  write_run(tmp_path, 'bald', 0, [0.5, 0.6, 0.7], model__dropout=0.3,
            model__dropout_layers='head')
  text = open(report.write_report(str(tmp_path))).read()
  assert 'Warning' not in text
  assert md_table(text, 'labels')[0] == ['labels', 'random (1 seed)', 'bald (1 seed)',
                                         'badge (1 seed)']


def test_report_cli_errors_are_one_line(tmp_path, capsys):
  assert report.main([str(tmp_path / 'missing')]) == 2
  assert capsys.readouterr().err.strip() == f'error: {tmp_path / "missing"} is not a folder'
  assert report.main([str(tmp_path)]) == 2
  assert capsys.readouterr().err.strip().startswith('error: no ')
  write_run(tmp_path, 'random', 0, [0.5, 0.6, 0.7])
  write_run(tmp_path, 'random', 0, [0.5, 0.6, 0.7], name='copy')
  assert report.main([str(tmp_path)]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and 'both strategy=random seed=0' in err[0]
  os.makedirs(tmp_path / 'broken')
  (tmp_path / 'copy' / 'results.json').write_text('{"config": ')
  assert report.main([str(tmp_path)]) == 2
  assert 'cannot read' in capsys.readouterr().err
  (tmp_path / 'copy' / 'results.json').unlink()
  os.makedirs(tmp_path / 'r')
  assert report.main([str(tmp_path), '--out', str(tmp_path / 'r')]) == 0
  assert report.main([str(tmp_path / 'random-seed0')]) == 2
  assert 'is one run: pass the folder that holds the runs' in capsys.readouterr().err


# ----------------------------------------------------------------------------- sweep

def test_sweep_plan_overrides_and_one_model_for_every_strategy():
  get_config = lambda: cli.load_config(os.path.join(REPO, 'configs', 'demo.py'))
  runs = sweep.plan(get_config, ['bald', 'random', 'badge'], [0, 1],
                    [('train.epochs', '3'), ('train.lr_milestones', '(0.5,)'),
                     ('train.augment', 'False'), ('dataset.name', 'x'), ('model.dropout', '0.3'),
                     ('model.dropout_layers', 'network')])
  assert [(s, i) for s, i, _ in runs] == [('bald', 0), ('random', 0), ('badge', 0), ('bald', 1),
                                          ('random', 1), ('badge', 1)]
  cfg = {(s, i): c for s, i, c in runs}
  assert {(c.model.dropout, c.model.dropout_layers) for c in cfg.values()} == {(0.3, 'network')}
  assert cfg['random', 1].seed == 1 and cfg['random', 1].strategy == 'random'
  c = cfg['random', 1]
  assert (c.train.epochs, tuple(c.train.lr_milestones), c.train.augment, c.dataset.name) == (
      3, (0.5,), False, 'x')
  # BALD is not given a dropout layer the other strategies lack: refused, in one line.
  with pytest.raises(sweep.ConfigError, match=r'^--strategies: strategy bald needs Monte-Carlo '
                     'dropout and every strategy of a sweep runs the same network: set '
                     r'--config.model.dropout=0.3 \(for all of them'):
    sweep.plan(get_config, ['random', 'bald'], [0], [])


@pytest.mark.parametrize('args, message', [
    (['--set', 'train.epochs=abc'], 'train.epochs=abc: expected int'),
    (['--config.train.nosuchkey=1'], "unknown config key 'train.nosuchkey'"),
    (['--set', 'seed=3'], 'seed is set by --seeds'),
    (['--strategies', 'dispersion,bogus'], "strategy='bogus' is not one of"),
    (['--seeds', '0,x'], 'comma-separated list of integers'),
    (['--set', 'train.epochs=0'], 'train.epochs=0 must be positive'),
    (['--bogus'], "unrecognized argument '--bogus'"),
    (['--set', 'oracle.kind=files'], 'a sweep needs oracle.kind=simulated'),
])
def test_sweep_bad_input_is_one_error_line(args, message, tmp_path, capsys):
  try:
    code = sweep.main(['--config', os.path.join(REPO, 'configs', 'demo.py'),
                       '--workdir', str(tmp_path / 'w')] + args)
  except SystemExit as e:  # argparse errors
    code = e.code
  err = capsys.readouterr().err.strip().splitlines()
  assert code == 2 and len(err) == 1 and err[0].startswith('error: ') and message in err[0], err
  assert not os.path.exists(tmp_path / 'w')


def test_sweep_error_inside_a_run_names_the_run(tmp_path, capsys):
  args = ['--config', os.path.join(REPO, 'configs', 'demo.py'), '--workdir', str(tmp_path),
          '--set', 'dataset.source=folder', f'--config.dataset.root={tmp_path / "none"}']
  assert sweep.main(args) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith('error: dispersion-seed0: dataset.root=')
  assert 'is not a folder' in err[0]


@pytest.mark.slow
def test_sweep_end_to_end_then_skips_finished_runs(tmp_path, capsys, monkeypatch):
  from _helpers import TINY  # pylint: disable=g-import-not-at-top
  tiny = {**TINY, 'train.epochs': 2, 'al.rounds': 1}
  args = ['--config', os.path.join(REPO, 'configs', 'demo.py'), '--strategies',
          'dispersion,random', '--seeds', '0', '--workdir', str(tmp_path)]
  args += [f'--config.{k}={v}' if i % 2 else f'--set={k}={v}'
           for i, (k, v) in enumerate(tiny.items())]
  assert sweep.main(args) == 0
  out = capsys.readouterr().out
  assert '[1/2] dispersion-seed0: running' in out and '[2/2] random-seed0: finished' in out
  accs = {}
  for s in ('dispersion', 'random'):
    with open(tmp_path / f'{s}-seed0' / 'results.json') as f:
      res = json.load(f)
    assert res['config']['train']['epochs'] == 2 and len(res['rounds']) == 2
    accs[s] = [f'{100 * r["test_accuracy"]:.2f}' for r in res['rounds']]  # one seed: no std
    assert os.path.exists(tmp_path / f'{s}-seed0' / 'diagnostics' / 'round_0.npz')
  text = open(tmp_path / 'report' / 'report.md').read()
  header, body = md_table(text, 'labels')
  assert header == ['labels', 'dispersion (1 seed)', 'random (1 seed)']
  assert body == [['100'] + [accs['dispersion'][0], accs['random'][0]],
                  ['150'] + [accs['dispersion'][1], accs['random'][1]]]
  for header in ('strategy | round | score | AUROC', 'strategy | round | score | top 1%'):
    _, diag = md_table(text, header)
    assert {(r[0], r[2]) for r in diag} == {
        ('dispersion', 'dispersion (highest)'), ('dispersion', 'margin (lowest)'),
        ('dispersion', 'entropy (highest)'), ('dispersion', 'flips (highest)'),
        ('dispersion', 'least confidence (highest)'), ('random', 'margin (lowest)'),
        ('random', 'entropy (highest)'), ('random', 'least confidence (highest)')}
  _, aulc_rows = md_table(text, 'strategy | seeds | AULC (%)')
  assert [r[0] for r in aulc_rows] == ['dispersion', 'random']
  _, paired = md_table(text, 'strategy | paired seeds')
  assert [r[:2] for r in paired] == [['dispersion', '1']]
  _, cost = md_table(text, 'strategy | pool passes per round')
  assert cost[0][:2] == ['dispersion', '2 (T: one per recorded epoch, during training; none after)']
  assert os.path.exists(tmp_path / 'report' / 'dispersion_hist_dispersion.png')

  # Rerun: both runs are skipped without running (or loading) anything.
  import jaxdisp.experiment  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(jaxdisp.experiment, 'run', lambda *a: pytest.fail('ran again'))
  assert sweep.main(args) == 0
  out = capsys.readouterr().out
  assert out.count('already finished') == 2


def test_balanced_accuracy_table(tmp_path):
  write_run(tmp_path, 'dispersion', 0, [0.5, 0.6, 0.7], balanced=[0.4, 0.5, 0.6])
  write_run(tmp_path, 'dispersion', 1, [0.5, 0.6, 0.7], balanced=[0.2, 0.3, 0.4])
  write_run(tmp_path, 'random', 0, [0.5, 0.6, 0.7])  # an older results.json: no balanced values
  text = open(report.write_report(str(tmp_path))).read()
  assert '## Balanced accuracy' in text
  header, body = md_table(text.split('## Balanced accuracy')[1], 'labels')
  # mean of 40 and 20 = 30, sample std = sqrt(200) = 14.14; random has no values: no column
  assert header == ['labels', 'dispersion (2 seeds)']
  assert body[0] == [str(COUNTS[0]), '30.00 ± 14.14']
  assert body[2] == [str(COUNTS[2]), '50.00 ± 14.14']
