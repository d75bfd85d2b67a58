"""The report's markdown, one function per section, and :func:`build`, which puts them in order.

Each section function returns its lines (a list of markdown lines ending with a blank one).
"""

from __future__ import annotations

import json
import os

import numpy as np

from jaxdisp.config_lib import flatten, result_neutral
from jaxdisp.report import detection, statistics
from jaxdisp.report.formatting import fmt, interval, mean_std, p_cell, seeds
from jaxdisp.report.loading import (load_runs, mismatched_model_keys, runs_by_strategy,
                                    strategy_rank)
from jaxdisp.report.statistics import BASELINE

# config keys that may differ between the runs of one report without a warning, beyond the
# result-neutral ones (config_lib.NON_RESULT_KEYS)
_PER_RUN_KEYS = ('strategy', 'seed')


def config_summary(runs) -> tuple[str, list[str]]:
  """(the first run's setup in words, the config keys that differ between the runs)."""
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


def header_section(workdir: str, runs, cs: dict) -> list[str]:
  """The title, the runs, the setup and a warning when the runs' configs differ."""
  setup, differ = config_summary(runs)
  md = [f'# Active-learning report: `{os.path.basename(os.path.abspath(workdir))}`', '',
        f'{len(runs)} runs from `{workdir}`: ' + ', '.join(
            f'{s} (seeds {", ".join(map(str, c.seeds))})' for s, c in cs.items()) + '.',
        f'Setup (first run): {setup}.', '']
  if differ:
    md += [f'**Warning**: the runs differ in config keys other than strategy/seed: '
           f'{", ".join(differ)}; the comparison mixes protocols.', '']
  return md


def curve_table(cs: dict) -> list[str]:
  """Markdown rows: one per labeled count, one column per strategy, mean ± std (n=k)."""
  md = ['| labels | ' + ' | '.join(f'{s} ({seeds(len(c.seeds))})' for s, c in cs.items()) + ' |',
        '|---:|' + '---:|' * len(cs)]
  for n in sorted({int(n) for c in cs.values() for n in c.labeled}):
    cells = []
    for c in cs.values():
      hit = np.flatnonzero(c.labeled == n)
      if not len(hit):
        cells.append('-')
        continue
      i = hit[0]
      cell = fmt(c.mean[i]) + (f' ± {fmt(c.std[i])}' if c.n[i] >= 2 else '')
      if c.n[i] < len(c.seeds):
        cell += f' (n={c.n[i]})'
      cells.append(cell)
    md.append(f'| {n} | ' + ' | '.join(cells) + ' |')
  return md


def accuracy_section(cs: dict) -> list[str]:
  return (['## Test accuracy', '',
           'Test accuracy (%), mean ± std over seeds; std is the sample standard deviation '
           '(numpy `ddof=1`) of the per-seed accuracies, left out where there is one seed. '
           "`(n=k)` marks a count that only k of the strategy's seeds have reached.", '']
          + curve_table(cs)
          + ['', '![learning curves: mean ± std over seeds](learning_curves.png)', ''])


def balanced_section(runs) -> list[str]:
  """The balanced-accuracy table; nothing when no run recorded balanced accuracy."""
  balanced = {s: c for s, c in statistics.curves(runs, 'balanced').items() if len(c.labeled)}
  if not balanced:
    return []
  return (['## Balanced accuracy', '',
           'The mean over classes of each class\'s test accuracy (%) (`balanced_accuracy` in '
           'results.json; per-class values are in `class_accuracy`), mean ± sample std over '
           'seeds. It differs from test accuracy when the test split is imbalanced or the model '
           'neglects classes (e.g. after training on `dataset.imbalance` > 1).', '']
          + curve_table(balanced) + [''])


def aulc_section(runs) -> list[str]:
  """Each strategy's AULC over the range every run covers, then the paired differences."""
  md = ['## Area under the learning curve', '']
  span = statistics.aulc_range(runs)
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
    values = [statistics.aulc(r.labeled, r.accuracy, a, b) for r in mine]
    md.append(f'| {s} | {len(values)} | {mean_std(values)} |')
  return md + [''] + paired_section(runs, span)


def paired_section(runs, span: tuple[float, float]) -> list[str]:
  """Per strategy, the mean per-seed difference against the baseline with its t interval, the
  paired t-test's p (raw and Holm-adjusted over the strategies) and the effect it can detect."""
  md = [f'### Paired differences against {BASELINE}', '']
  if BASELINE not in runs_by_strategy(runs):  # the baseline every strategy is paired with
    return md + [f'No `{BASELINE}` runs: skipped.', '']
  pairs = statistics.paired_differences(runs, span)
  if not pairs:
    return md + [f'Only {BASELINE} was run: nothing to compare.', '']
  b = span[1]
  md += ['The same seed gives every strategy the same initial set (and round-0 model), so each '
         f'strategy is compared with {BASELINE} seed by seed: d = strategy - {BASELINE} in AULC '
         f'and in test accuracy at {b:g} labels (percentage points), over the seeds both have. '
         'Mean of d and its 95% Student t interval, mean ± t(0.975, n - 1) * s / sqrt(n), s = '
         'the sample std of d (no interval with one pair). An interval that excludes 0 is a '
         'difference at the 95% level; one that contains it is not distinguishable from '
         f'{BASELINE} with these seeds, and the verdict column stays empty. **p**: the paired '
         't-test of Δ AULC = 0 (two-sided); '
         '**Holm p**: adjusted over the strategies in this table (Holm\'s step-down), so that '
         'the chance of any false "different" in the table stays at 5%. **MDE**: the minimum '
         'detectable effect, the true Δ AULC that this test with these seeds and this spread s '
         'finds (p < 0.05) 80% of the time (noncentral t); an empty verdict rules out effects '
         'of about the MDE and larger, not smaller ones.', '',
         f'| strategy | paired seeds | Δ AULC | 95% interval | Δ accuracy at {b:g} | '
         f'95% interval | AULC vs {BASELINE} | p | Holm p | MDE (80% power) |',
         '|---|---:|---:|---:|---:|---:|---|---:|---:|---:|']
  ps = [statistics.paired_t_p(p.d_aulc) for p in pairs]
  for p, raw, adjusted in zip(pairs, ps, statistics.holm(ps)):
    if not p.seeds:
      md.append(f'| {p.strategy} | 0 | - | - | - | - | no seed in common with {BASELINE} '
                '| - | - | - |')
      continue
    da, df = interval(p.d_aulc), interval(p.d_final)
    _, low, high = statistics.t_interval(p.d_aulc)
    verdict = '-' if np.isnan(low) else 'above' if low > 0 else 'below' if high < 0 else ''
    mde = statistics.min_detectable_effect(statistics.sample_std(p.d_aulc), len(p.d_aulc))
    name = f'{p.strategy} †' if p.own_round0 else p.strategy
    mde_cell = '-' if np.isnan(mde) else fmt(mde)
    md.append(f'| {name} | {len(p.seeds)} | {da[0]} | {da[1]} | {df[0]} | {df[1]} | '
              f'{verdict} | {p_cell(raw)} | {p_cell(adjusted)} | {mde_cell} |')
  own = [p.strategy for p in pairs if p.own_round0]
  if own:
    md += ['', f'† Not the same round-0 model as {BASELINE}: its round-0 test accuracy differs '
           f'on a paired seed ({", ".join(own)} train a model of their own, e.g. an ensemble or '
           'an auxiliary head), so its difference measures the model as well as the '
           'acquisition.']
  return md + [''] + penalty_section(runs)


def penalty_section(runs) -> list[str]:
  """Ash et al.'s pairwise penalty matrix of the setting (:func:`statistics.penalty_matrix`)."""
  names, p, rounds = statistics.penalty_matrix(runs)
  if len(names) < 2:
    return []
  md = ['### Pairwise penalty matrix', '',
        'As in Ash et al. (ICLR 2020): for every pair of strategies and each of the '
        f'{rounds} rounds after the initial one, a two-sided paired t-test at 5% over the seeds '
        'both have compares their test accuracies; the winner of a rejected test gets '
        f'1/{rounds} in its row, in the loser\'s column. An entry is the fraction of rounds in '
        'which the row strategy beats the column one; **beaten** (the column sum) is how '
        'often a strategy loses, lower is better. No multiplicity correction: with many '
        'strategies some entries are false positives.', '',
        '| wins \\ loses | ' + ' | '.join(names) + ' |',
        '|---|' + '---:|' * len(names)]
  for i, a in enumerate(names):
    md.append(f'| {a} | ' + ' | '.join('' if i == j else f'{p[i, j]:.2f}'
                                      for j in range(len(names))) + ' |')
  md.append('| **beaten** | ' + ' | '.join(f'**{v:.2f}**' for v in p.sum(0)) + ' |')
  return md + ['']


def labels_saved_section(runs) -> list[str]:
  """Per strategy, the labels it saves against the baseline seed by seed, with a paired
  interval, where its AULC difference is significant."""
  md = [f'## Labels saved against {BASELINE}', '']
  span = statistics.aulc_range(runs)
  if BASELINE not in runs_by_strategy(runs) or span is None:
    return md + [f'No `{BASELINE}` runs (or no common range of labels): skipped.', '']
  saved = statistics.paired_labels_saved(runs)
  if not saved:
    return md + [f'Only {BASELINE} was run: nothing to compare.', '']
  md += [f"On each seed, the target is {BASELINE}'s final test accuracy at its final labeled "
         "count F; the strategy's own curve on that seed (its points joined by straight lines, "
         'scanned from the first) reaches the target at L labels, and saves F - L (negative: '
         f'more labels than {BASELINE}). Mean and 95% t interval over the paired seeds. '
         'Printed only where the AULC difference above excludes 0: a saving read off curves '
         'that do not differ is noise; and only where every seed reaches the target.', '',
         '| strategy | paired seeds | labels saved | 95% interval | % of F |',
         '|---|---:|---:|---:|---:|']
  pairs = {p.strategy: p for p in statistics.paired_differences(runs, span)}
  final = {r.seed: r.labeled[-1] for r in runs if r.strategy == BASELINE}
  for s, values in saved.items():
    _, low, high = statistics.t_interval(pairs[s].d_aulc) if s in pairs else (0, np.nan, np.nan)
    if not values:
      md.append(f'| {s} | 0 | - | - | - |')
    elif np.isnan(low) or low <= 0 <= high:
      md.append(f'| {s} | {len(values)} | not printed: Δ AULC does not exclude 0 | - | - |')
    elif any(v is None for v in values):
      md.append(f'| {s} | {len(values)} | {sum(v is None for v in values)} of {len(values)} '
                f"seeds never reach {BASELINE}'s final accuracy | - | - |")
    else:
      mean, lo, hi = statistics.t_interval(values)
      f = float(np.mean(list(final.values())))
      md.append(f'| {s} | {len(values)} | {mean:+.0f} | '
                + ('-' if np.isnan(lo) else f'[{lo:+.0f}, {hi:+.0f}]')
                + f' | {100.0 * mean / f:+.1f}% |')
  return md + ['']


def _directions(rows) -> str:
  """'highest a / b, lowest c': the scores of ``rows`` by the end that is most uncertain."""
  labels: dict[str, bool] = {}
  for row in rows:
    labels.setdefault(row['score'], row['highest'])
  ends = [(end, [s for s, h in labels.items() if h == (end == 'highest')])
          for end in ('highest', 'lowest')]
  return ', '.join(f'{end} ' + ' / '.join(names) for end, names in ends if names)


def _label(row) -> str:
  return f'{row["score"]} ({"highest" if row["highest"] else "lowest"})'


def detection_tables(rows) -> list[str]:
  """The AUROC / AUPR table and the top-k% accuracy table of the pool scores."""
  md = ["Each score ranks the pool that round r's final model scored in round r, its most "
        'uncertain end first as its diagnostics file records it: '
        f"{_directions(rows)}. A mistake (the model's prediction differs from the label) is a "
        'positive, the score is the detector. **AUROC** = P(s+ > s-) + 1/2 P(s+ = s-) over all '
        '(mistake, correct) pairs: ties count half (midranks), 0.5 = chance. **AUPR** = '
        'average precision, the sum over the distinct score values, from the most uncertain '
        'down, of (recall gain) x (precision); a tied block enters at once, no '
        'interpolation; chance = the error rate. NaN scores rank as the least uncertain. '
        'Per run, then mean ± sample std (`ddof=1`) over the runs (seeds) that have the file '
        '(`runs`).', '',
        '| strategy | round | score | AUROC | AUPR | error rate | runs |',
        '|---|---:|---|---:|---:|---:|---:|']
  for row in rows:
    md.append(f'| {row["strategy"]} | {row["round"]} | {_label(row)} | '
              f'{mean_std(row["auroc"], 3)} | {mean_std(row["aupr"], 3)} | '
              f'{mean_std(row["error_rate"], 3)} | {row["runs"]} |')
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
    md.append(f'| {row["strategy"]} | {row["round"]} | {_label(row)} | '
              + ' | '.join(mean_std(row['top'][:, j]) for j in range(len(detection.PERCENTS)))
              + f' | {mean_std(row["pool_accuracy"])} | {row["runs"]} |')
  return md + [''] + risk_coverage_table(rows)


def risk_coverage_table(rows) -> list[str]:
  """AURC, E-AURC and the risk at fixed coverages of every pool score."""
  covs = ' | '.join(f'risk@{c}%' for c in detection.COVERAGES)
  md = ['Selective prediction (Geifman & El-Yaniv): keep the least uncertain i of the P pool '
        "samples; the **risk** at coverage i / P is the round's model's error rate (%) on them. "
        '**AURC** = the mean risk over i = 1..P (lower = the score orders the mistakes last); '
        '**E-AURC** = AURC minus the AURC of the ideal order (every mistake last), so 0 is '
        'perfect whatever the error rate; **risk@c%** keeps ceil(c P / 100). Tied samples enter '
        'at their expected value (every order of a tied block equally likely). Mean ± sample std '
        'over the runs.', '',
        f'| strategy | round | score | AURC | E-AURC | {covs} | runs |',
        '|---|---:|---|---:|---:|' + '---:|' * len(detection.COVERAGES) + '---:|']
  for row in rows:
    md.append(f'| {row["strategy"]} | {row["round"]} | {_label(row)} | '
              f'{mean_std(row["aurc"])} | {mean_std(row["eaurc"])} | '
              + ' | '.join(mean_std(row['risk'][:, j]) for j in range(len(detection.COVERAGES)))
              + f' | {row["runs"]} |')
  return md + ['']


def histogram_links(hist: dict) -> tuple[list[str], dict]:
  """(the links to the dispersion histograms, {file name: (strategy, {round: values})})."""
  by_strategy: dict = {}
  for (s, r), values in hist.items():
    by_strategy.setdefault(s, {})[r] = values
  md, figures = [], {}
  for s in sorted(by_strategy, key=strategy_rank):
    name = f'dispersion_hist_{s}.png'
    figures[name] = (s, by_strategy[s])
    md += [f'![{s}: dispersion over the pool per round]({name})', '']
  if not by_strategy:
    md += ['No run recorded dispersion (no prediction history): no dispersion histogram.', '']
  return md, figures


def uncertainty_section(runs) -> tuple[list[str], dict]:
  """(the uncertainty evaluation of the pool scores, the histograms' figure data)."""
  md = ["## Uncertainty evaluation: which score finds the model's mistakes", '']
  rows, hist, problems = detection.collect_diagnostics(runs)
  figures = {}
  if not rows:
    md += ['No pool diagnostics (`<run>/diagnostics/round_<r>.npz`) found: skipped.', '']
  else:
    links, figures = histogram_links(hist)
    md += detection_tables(rows) + links
  if problems:
    md += ['Skipped diagnostics files: ' + '; '.join(f'`{p}`' for p in problems), '']
  return md, figures


def cost_section(runs) -> list[str]:
  """Per strategy, its pool passes per round and its measured seconds per round."""
  md = ['## Cost of each strategy', '',
        "Forward passes over the scored pool per round for the strategy's own score, and the "
        "runs' measured seconds per round (results.json `seconds`, mean over runs and rounds): "
        'training (all rounds), scoring and selection (the rounds that queried). A strategy '
        'that records the pool during training makes its T passes inside the training epochs, '
        "so they are in its training time (compare with another strategy's training time under "
        'the same protocol); the extra pool pass that writes the diagnostics above is not '
        'timed. A score of the final model alone costs one pass whichever strategy selected.', '',
        '| strategy | pool passes per round | train (s/round) | score (s/round) | '
        'select (s/round) | runs |',
        '|---|---|---:|---:|---:|---:|']
  cell = lambda x: '-' if np.isnan(x) else f'{x:.2f}'
  for c in statistics.costs(runs):
    md.append(f'| {c["strategy"]} | {c["passes"]} | {cell(c["train"])} | {cell(c["score"])} | '
              f'{cell(c["select"])} | {c["runs"]} |')
  return md + ['']


def build(workdir: str, allow_mixed_models: bool = False) -> tuple[str, dict]:
  """The report's markdown text and its figures' data (no files written): ``{'curves': {strategy:
  Curve}, 'hist': {file name: (strategy, {round: [values per run]})}}``."""
  runs = load_runs(workdir)
  mismatched_model_keys(runs, allow_mixed_models)
  cs = statistics.curves(runs)
  uncertainty, hist = uncertainty_section(runs)
  md = (header_section(workdir, runs, cs) + accuracy_section(cs) + balanced_section(runs)
        + aulc_section(runs) + labels_saved_section(runs) + uncertainty + cost_section(runs))
  return '\n'.join(md), {'curves': cs, 'hist': hist}
