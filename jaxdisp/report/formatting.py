"""How the report writes its numbers: two decimals, mean ± sample std, signed t intervals."""

from __future__ import annotations

import numpy as np

from jaxdisp.report.statistics import sample_std, t_interval


def seeds(n: int) -> str:
  return f'{n} seed' if n == 1 else f'{n} seeds'


def fmt(x: float) -> str:
  return f'{x:.2f}'


def mean_std(values, digits: int = 2) -> str:
  """'mean ± sample std' of the finite values ('mean' alone for one, '-' for none); '(n=k)'
  when only k of them are finite."""
  v = [float(x) for x in values if np.isfinite(x)]
  if not v:
    return '-'
  text = f'{np.mean(v):.{digits}f}'
  if len(v) >= 2:
    text += f' ± {sample_std(v):.{digits}f}'
  return text + (f' (n={len(v)})' if len(v) < len(values) else '')


def interval(values) -> tuple[str, str]:
  """('+mean', '[low, high]') of the 95% t interval; the interval is '-' below 2 values."""
  mean, low, high = t_interval(values)
  if not len(values):
    return '-', '-'
  return f'{mean:+.2f}', ('-' if np.isnan(low) else f'[{low:+.2f}, {high:+.2f}]')


def p_cell(p: float) -> str:
  """A p value: '-' for NaN, '< 0.001' below it, 3 decimals below 0.1, else 2."""
  if not np.isfinite(p):
    return '-'
  return '< 0.001' if p < 0.001 else f'{p:.3f}' if p < 0.1 else f'{p:.2f}'
