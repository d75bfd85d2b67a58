r"""Aggregates a sweep's runs into one report: does the strategy beat random, with error bars?

  python -m jaxdisp.report W                 # writes W/report/{report.md, *.png}
  python -m jaxdisp.report W --out docs/results

Reads every ``W/*/results.json`` (one experiment each, as written by ``jaxdisp.main`` /
``jaxdisp.sweep``), groups the runs by ``config.strategy`` (the seeds are ``config.seed``) and
writes

* ``report.md``: test accuracy (%) per strategy per labeled count, mean ± population std
  (``ddof=0``) over seeds; the labels each strategy saves against random; the pool diagnostics;
* ``learning_curves.png``: the mean curve of each strategy with a shaded ±std band;
* ``dispersion_hist_<strategy>.png``: the distribution of dispersion over the scored pool, one
  panel per round (only for runs whose ``diagnostics/round_<r>.npz`` hold dispersion values).

**Labels saved.** Random's target is its final mean accuracy (the mean at its largest labeled
count N). A strategy's mean curve (means joined by straight lines, in order of labeled count) is
scanned from its first point; the first segment that reaches the target is interpolated linearly
to find the count n where it gets there (a curve at or above the target at its first point gives
that point's count). Labels saved = N - n (negative: more labels than random). A curve that never
gets there is reported as ``never reaches random's final accuracy (best x%)``.

**Pool diagnostics** (``W/<run>/diagnostics/round_<r>.npz``: ``ids``, ``dispersion``, ``margin``,
``entropy``, ``correct``, optionally ``bald``): for each score, the accuracy of the round-r model
on the k = ceil(p * P / 100) most uncertain of the P pool samples, p = 1, 5, 10 -- highest
dispersion / entropy / BALD, lowest margin -- next to its accuracy on the whole pool. The order is
a stable sort on the score with ties broken by ascending dataset id (dispersion takes only T + 1
values, so the slice boundary is usually tied); NaN scores rank last, and a score that is NaN
everywhere (dispersion of a run without a prediction history) is left out. Numbers are averaged
over the runs of a strategy that have the file (a plain mean of per-run accuracies).

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
from jaxdisp.io_utils import ArgumentParser, atomic_write

PERCENTS = (1, 5, 10)
# score name, column in the npz, True = the highest values are the most uncertain
SCORES = (('dispersion', 'dispersion', True), ('margin', 'margin', False),
          ('entropy', 'entropy', True), ('BALD', 'bald', True))
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
    except (OSError, ValueError, KeyError, TypeError) as e:
      raise ReportError(f'cannot read {path}: {type(e).__name__}: {e}') from None
    run_dir = os.path.dirname(path)
    name = os.path.basename(run_dir)
    if (strategy, seed) in seen:
      raise ReportError(f'runs {seen[strategy, seed]} and {name} are both strategy={strategy} '
                        f'seed={seed}; move one of them out of {workdir}')
    seen[strategy, seed] = name
    runs.append(Run(name, run_dir, strategy, seed, cfg, labeled, accuracy))
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


# ----------------------------------------------------------------------------- accuracy

@dataclasses.dataclass
class Curve:
  """A strategy's accuracy (%) per labeled count over its seeds."""
  labeled: np.ndarray  # int [C], increasing
  mean: np.ndarray  # [C]
  std: np.ndarray  # [C], population std (ddof=0)
  n: np.ndarray  # int [C]: seeds with this count
  seeds: list[int]


def curves(runs) -> dict[str, Curve]:
  out = {}
  for s in strategies(runs):
    per_count: dict[int, list[float]] = {}
    mine = [r for r in runs if r.strategy == s]
    for r in mine:
      for n, a in zip(r.labeled, r.accuracy):
        per_count.setdefault(n, []).append(a)
    counts = sorted(per_count)
    vals = [np.asarray(per_count[n], np.float64) for n in counts]
    out[s] = Curve(np.asarray(counts, np.int64), np.array([v.mean() for v in vals]),
                   np.array([v.std(ddof=0) for v in vals]),
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


def most_uncertain(score, ids, k: int, highest: bool) -> np.ndarray:
  """Positions of the k most uncertain samples: stable order, ties by ascending id, NaN last."""
  score = np.asarray(score, np.float64)
  key = np.where(np.isnan(score), np.inf, -score if highest else score)
  return np.lexsort((np.asarray(ids), key))[:k]


def diagnostics_of_file(path: str) -> dict:
  """{'round', 'pool', 'pool_accuracy', 'top': {score: [acc% per PERCENTS]}, 'dispersion'}."""
  m = re.fullmatch(r'round_(\d+)\.npz', os.path.basename(path))
  with np.load(path) as z:
    missing = [k for k in _REQUIRED_DIAG if k not in z.files]
    if missing:
      raise ValueError(f'missing array(s) {", ".join(missing)}')
    arrays = {k: np.asarray(z[k]) for k in z.files}
  size = len(arrays['ids'])
  bad = [k for k in _REQUIRED_DIAG + ('bald',) if k in arrays and arrays[k].shape != (size,)]
  if bad:
    raise ValueError(f'array(s) {", ".join(bad)} do not have the shape of ids ({size},)')
  if size == 0:
    raise ValueError('empty pool')
  correct = arrays['correct'].astype(bool)
  top = {}
  for name, column, highest in SCORES:
    if column not in arrays or np.isnan(arrays[column].astype(np.float64)).all():
      continue
    top[name] = [100.0 * correct[most_uncertain(arrays[column], arrays['ids'],
                                                  top_k(p, size), highest)].mean()
                 for p in PERCENTS]
  disp = arrays['dispersion'].astype(np.float64)
  return {'round': int(m.group(1)), 'pool': size, 'pool_accuracy': 100.0 * correct.mean(),
          'top': top, 'dispersion': disp[~np.isnan(disp)] if 'dispersion' in top else None}


def collect_diagnostics(runs):
  """(rows, dispersion values per (strategy, round), problems), rows averaged over runs."""
  acc: dict = {}  # (strategy, round, score) -> list of (top list, pool accuracy)
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
      for score, top in d['top'].items():
        acc.setdefault((run.strategy, d['round'], score), []).append((top, d['pool_accuracy']))
      if d['dispersion'] is not None:
        hist.setdefault((run.strategy, d['round']), []).append(d['dispersion'])
  rows = []
  order = {name: i for i, (name, _, _) in enumerate(SCORES)}
  for (s, r, score), vals in sorted(acc.items(), key=lambda kv: (
      _strategy_rank(kv[0][0]), kv[0][1], order[kv[0][2]])):
    tops = np.asarray([v[0] for v in vals], np.float64)
    rows.append({'strategy': s, 'round': r, 'score': score, 'runs': len(vals),
                 'top': tops.mean(axis=0).tolist(),
                 'pool_accuracy': float(np.mean([v[1] for v in vals]))})
  return rows, hist, problems


# ----------------------------------------------------------------------------- output

def _seeds(n: int) -> str:
  return f'{n} seed' if n == 1 else f'{n} seeds'


def _fmt(x: float) -> str:
  return f'{x:.2f}'


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
    ax.fill_between(c.labeled, c.mean - c.std, c.mean + c.std, color=line.get_color(),
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
  return text, differ


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
         'Test accuracy (%), mean ± std over seeds; std is the population standard deviation '
         '(numpy `ddof=0`) of the per-seed accuracies. `(n=k)` marks a count that only k of the '
         "strategy's seeds have reached.", '',
         '| labels | ' + ' | '.join(f'{s} ({_seeds(len(c.seeds))})' for s, c in cs.items()) + ' |',
         '|---:|' + '---:|' * len(cs)]
  all_counts = sorted({int(n) for c in cs.values() for n in c.labeled})
  for n in all_counts:
    cells = []
    for c in cs.values():
      hit = np.flatnonzero(c.labeled == n)
      if not len(hit):
        cells.append('-')
        continue
      i = hit[0]
      cell = f'{_fmt(c.mean[i])} ± {_fmt(c.std[i])}'
      if c.n[i] < len(c.seeds):
        cell += f' (n={c.n[i]})'
      cells.append(cell)
    md.append(f'| {n} | ' + ' | '.join(cells) + ' |')
  md += ['', '![learning curves: mean ± std over seeds](learning_curves.png)', '']

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

  # -- diagnostics
  md += ['## Pool diagnostics: accuracy on the most uncertain pool samples', '']
  rows, hist, problems = collect_diagnostics(runs)
  figures = {'curves': cs, 'hist': {}}
  if not rows:
    md += ['No pool diagnostics (`<run>/diagnostics/round_<r>.npz`) found: skipped.', '']
  else:
    md += ["Accuracy (%) of round r's final model on the top 1% / 5% / 10% most uncertain "
           'samples of the pool it scored in round r (k = ceil(p * P / 100) of P), by each '
           'score: highest dispersion / entropy / BALD, lowest margin (top-1 minus top-2 '
           'probability); and on the whole pool. Lower accuracy on the top slice = the score '
           "finds the samples the model gets wrong. Ranking: a stable sort on the score, ties "
           "broken by ascending dataset id (dispersion takes only T + 1 values, so the slice "
           'boundary is usually tied), NaN last. Averaged over the runs that have the file '
           '(`runs`); whole-pool accuracy over the same runs.', '',
           '| strategy | round | score | top 1% | top 5% | top 10% | whole pool | runs |',
           '|---|---:|---|---:|---:|---:|---:|---:|']
    for row in rows:
      direction = 'lowest' if row['score'] == 'margin' else 'highest'
      md.append(f'| {row["strategy"]} | {row["round"]} | {row["score"]} ({direction}) | '
                + ' | '.join(_fmt(v) for v in row['top'])
                + f' | {_fmt(row["pool_accuracy"])} | {row["runs"]} |')
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
  return '\n'.join(md), figures


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
