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

**Uncertainty evaluation** (``W/<run>/diagnostics/round_<r>.npz``, see :mod:`.loading`): each
score the file records, with the name, display name and direction it records, is a detector of
the round-r model's mistakes on the pool (mistake = positive); see :mod:`.detection` for AUROC,
AUPR and top-p% accuracy (p = 1, 5, 10) with ties. Per run, then mean ± sample std over the runs
of a strategy that have the file.

**One network per table.** Runs whose ``model.*`` keys differ (e.g. dropout for one strategy
only) are refused with one line naming the keys, unless ``--allow-mixed-models``; the report then
warns that the comparison mixes protocols, listing them.

All files are written atomically (temporary file + ``os.replace``). A bad input prints one
``error: ...`` line and exits with status 2.

Modules: :mod:`.loading` (runs and diagnostics files), :mod:`.statistics` (curves, AULC, paired
t intervals, labels saved, cost), :mod:`.detection` (the uncertainty evaluation),
:mod:`.sections` (the markdown, one function per section), :mod:`.plots` (the figures),
:mod:`.cli` (``write_report`` and the command line).
"""

from jaxdisp.report.cli import main, write_report
from jaxdisp.report.detection import (HISTOGRAM_SCORE, PERCENTS, auroc, average_precision,
                                      collect_diagnostics, diagnostics_of_file, top_k,
                                      topk_accuracy_expected, uncertainty)
from jaxdisp.report.formatting import mean_std
from jaxdisp.report.loading import (Diagnostics, Run, Score, load_runs, mismatched_model_keys,
                                    read_diagnostics, runs_by_strategy, strategies)
from jaxdisp.report.plots import plot_dispersion_hist, plot_learning_curves
from jaxdisp.report.sections import build
from jaxdisp.report.statistics import (BASELINE, Curve, Paired, Saved, aulc, aulc_range, costs,
                                       curves, labels_saved, labels_to_reach, paired_differences,
                                       pool_passes, sample_std, t_interval, t_quantile_975)
