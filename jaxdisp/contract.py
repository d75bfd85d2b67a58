"""The strategy contract, checked once at the boundary between a strategy and the core.

A strategy's ``score(view)`` must return one number per pool position: a 1-D array (jax or
NumPy) of shape ``[P]`` = ``view.capacity`` (rows past ``view.num_pool`` are padding and never
selected), of a real dtype (not boolean: a boolean cannot rank). ``select(view, budget)`` must
return ``(positions, scores)``: exactly ``budget`` distinct integer positions of real pool rows
(``0 <= p < num_pool``; the pool holds only unlabeled samples, so a real position is an
unlabeled one) and ``budget`` real scores. A function that raises is reported with what it
raised. Each broken rule is one :class:`~jaxdisp.errors.StrategyError` line naming the strategy
and the rule; the core never guesses what a broken result meant.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np

from jaxdisp import parallel
from jaxdisp.errors import JaxdispError, Preempted, StrategyError


def _what(x) -> str:
  return f'shape {tuple(x.shape)}, dtype {x.dtype}'


def call(name: str, fn: Callable, kind: str, *args) -> Any:
  """``fn(*args)``; an exception other than jaxdisp's own (and a stop) becomes one line."""
  try:
    return fn(*args)
  except (JaxdispError, Preempted):
    raise
  except Exception as e:  # pylint: disable=broad-except  (a user's function: any failure)
    first = (str(e).strip().splitlines() or [''])[0][:300]
    raise StrategyError(f'strategy={name}: its {kind} function raised {type(e).__name__}'
                        + (f': {first}' if first else '')) from None


def check_scores(name: str, scores, capacity: int) -> None:
  """Shape and dtype of a ``score`` result (finiteness is the NaN policy's: a NaN score means a
  diverged model, reported as :class:`~jaxdisp.errors.NumericalError`)."""
  rule = f'strategy={name}: score must return one number per pool position (an array of ' \
         f'shape [{capacity}], rows past num_pool being padding)'
  if not isinstance(scores, (jax.Array, np.ndarray)):
    raise StrategyError(f'{rule}; it returned a {type(scores).__name__}')
  if scores.ndim != 1 or scores.shape[0] != capacity:
    raise StrategyError(f'{rule}; it returned {_what(scores)}')
  if scores.dtype == bool or not (np.issubdtype(scores.dtype, np.floating)
                                  or np.issubdtype(scores.dtype, np.integer)):
    raise StrategyError(f'strategy={name}: score must return real numbers (a float or integer '
                        f'array); it returned {_what(scores)}')


def check_selection(name: str, result, budget: int, num_pool: int
                    ) -> tuple[np.ndarray, np.ndarray]:
  """A ``select`` result ``(positions, scores)`` as host arrays (int64 positions, float32
  scores), or one line. Sharded device arrays are gathered with ``parallel.to_host``."""
  if not (isinstance(result, tuple) and len(result) == 2):
    raise StrategyError(f'strategy={name}: select must return a pair (positions, scores); it '
                        f'returned a {type(result).__name__}')
  positions, scores = (parallel.to_host(v) if isinstance(v, jax.Array) else v for v in result)
  where = f'strategy={name}: select must return (positions, scores) with exactly {budget} ' \
          f'distinct integer positions in [0, {num_pool})'
  for value, what in ((positions, 'positions'), (scores, 'scores')):
    if not isinstance(value, (jax.Array, np.ndarray)):
      raise StrategyError(f'{where}; its {what} are a {type(value).__name__}, not an array')
  pos = np.asarray(jax.device_get(positions))
  if not np.issubdtype(pos.dtype, np.integer):
    raise StrategyError(f'{where}; its positions have dtype {pos.dtype}')
  if pos.ndim != 1 or len(pos) != budget:
    raise StrategyError(f'{where}; it returned {_what(pos)}')
  bad = pos[(pos < 0) | (pos >= num_pool)]
  if bad.size:
    kind = 'negative' if bad.min() < 0 else 'padding (past the real pool rows)'
    raise StrategyError(f'{where}; position {int(bad[0])} is {kind}')
  if len(np.unique(pos)) != len(pos):
    values, counts = np.unique(pos, return_counts=True)
    raise StrategyError(f'{where}; position {int(values[counts > 1][0])} is returned '
                        f'{int(counts.max())} times ({len(values)} distinct)')
  sc = np.asarray(jax.device_get(scores))
  if sc.shape != (budget,) or sc.dtype == bool or not (
      np.issubdtype(sc.dtype, np.floating) or np.issubdtype(sc.dtype, np.integer)):
    raise StrategyError(f'strategy={name}: select must return {budget} real scores with its '
                        f'positions; they have {_what(sc)}')
  return pos.astype(np.int64), sc.astype(np.float32)
