"""The report's figures: learning curves with a ±std band, and the dispersion histograms."""

from __future__ import annotations

import io

import numpy as np

from jaxdisp.files import atomic_write
from jaxdisp.report.formatting import fmt, seeds
from jaxdisp.report.statistics import Curve


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _save_figure(fig, path: str) -> None:
  plt = _pyplot()
  buf = io.BytesIO()
  fig.savefig(buf, format='png')
  plt.close(fig)
  atomic_write(path, buf.getvalue())


def plot_learning_curves(path: str, cs: dict[str, Curve], title: str) -> None:
  """Each strategy's mean curve with a shaded ±std band (none with one seed)."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
  for s, c in cs.items():
    line, = ax.plot(c.labeled, c.mean, 'o-', ms=3, label=f'{s} ({seeds(len(c.seeds))})')
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
  """One panel per round: the distribution of dispersion over the pool, each run weighted
  equally (one bar per value when it takes few values, as dispersion's k / T do)."""
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
                 f'{len(per_round[r][0])} pool samples each), mean {fmt(values.mean())}',
                 fontsize=8)
    ax.grid(alpha=0.3)
  axes[-1, 0].set_xlabel('label dispersion')
  fig.tight_layout()
  _save_figure(fig, path)
