r"""Time of ``jaxdisp.label_dispersion`` against the memory-bandwidth bound of reading the history.

  python benchmarks/dispersion_kernel.py          # N {1e4,1e5,1e6} x T {25,100,200} x C {10,100}
  python benchmarks/dispersion_kernel.py --quick  # N = 1e4, T = 25, C in {10, 100}

For each (N pool samples, T recorded epochs, C classes) a random int8 history ``[T, N]`` is put
on the default device and timed (jitted, ``block_until_ready``, median of several runs after a
warm-up call):

* ``copy``: a jitted, in-place (donated) ``x + 1`` over a copy of the same int8 buffer (reads and
  writes ``T * N`` bytes; in place so that page faults on a freshly allocated output are not
  counted), which gives the measured bandwidth ``2 * T * N / copy time``. Buffers that fit in the
  last-level cache (here 32 MB of L3) get the cache's bandwidth, so their bound is tight;
* ``bound``: the time to read the history once and write the float32 result at that bandwidth,
  ``(T * N + 4 * N) / bandwidth``;
* ``jaxdisp``: ``jaxdisp.label_dispersion(history, C)`` as shipped (column blocks, per-class
  counters kept in cache; see ``jaxdisp/dispersion.py``); fraction of bound = bound / time;
* ``naive``: :func:`naive_dispersion`, the textbook one-liner
  ``sum(history[:, :, None] == classes, 0)`` then max, which XLA:CPU turns into a materialised
  ``[T, N, C]`` int32 comparison (for T > 32); skipped beyond ``--max-gb`` and says so.

Both are checked against each other and against NumPy on a column subset (identical, exactly).
Writes ``<out>/dispersion_kernel[_quick].json``.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # pylint: disable=g-import-not-at-top,wrong-import-position

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

FULL = dict(N=(10**4, 10**5, 10**6), T=(25, 100, 200), C=(10, 100))
QUICK = dict(N=(10**4,), T=(25,), C=(10, 100))


@jax.jit
def _naive(history: jax.Array, classes: jax.Array) -> jax.Array:
  counts = jnp.sum(history[:, :, None] == classes, axis=0, dtype=jnp.int32)  # [N, C]
  recorded = jnp.sum(history >= 0, axis=0, dtype=jnp.int32)
  f = counts.max(-1)
  return jnp.where(recorded > 0, (recorded - f).astype(jnp.float32)
                   / jnp.maximum(recorded, 1).astype(jnp.float32), jnp.float32(0))


def naive_dispersion(history: jax.Array, num_classes: int) -> jax.Array:
  """The obvious vectorised formulation (what jaxdisp shipped before the blocked kernel)."""
  return _naive(history, jnp.arange(num_classes, dtype=history.dtype))


def numpy_dispersion(history: np.ndarray, num_classes: int) -> np.ndarray:
  """Reference on the host (default options)."""
  counts = np.stack([(history == c).sum(0) for c in range(num_classes)])
  recorded = (history >= 0).sum(0)
  f = counts.max(0)
  return np.where(recorded > 0, (recorded - f).astype(np.float32)
                  / np.maximum(recorded, 1).astype(np.float32), np.float32(0))


def timed(fn, *args, budget_s: float = 1.0, max_reps: int = 7) -> dict:
  """Warm-up call (compile), then repetitions until ``budget_s`` or ``max_reps``; median."""
  t0 = time.perf_counter()
  out = jax.block_until_ready(fn(*args))
  first = time.perf_counter() - t0
  runs = []
  while len(runs) < max_reps and (len(runs) < 3 or sum(runs) < budget_s):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    runs.append(time.perf_counter() - t0)
    if runs[-1] > budget_s and len(runs) >= 1:
      break
  return {'median_s': _common.median(runs), 'runs_s': runs, 'first_call_s': first}, out


def copy_time(history: jax.Array, reps: int = 9, budget_s: float = 0.3) -> dict:
  """Median time of an in-place ``x + 1`` over a copy of ``history``."""
  inc = jax.jit(lambda x: x + 1, donate_argnums=0)
  x = jax.block_until_ready(inc(jnp.copy(history)))
  runs = []
  while len(runs) < reps and (len(runs) < 3 or sum(runs) < budget_s):
    t0 = time.perf_counter()
    x = jax.block_until_ready(inc(x))
    runs.append(time.perf_counter() - t0)
  del x
  return {'median_s': _common.median(runs), 'runs_s': runs}


def available_gb() -> float:
  try:
    with open('/proc/meminfo') as f:
      for line in f:
        if line.startswith('MemAvailable:'):
          return int(line.split()[1]) / 2**20
  except OSError:
    pass
  return 8.0


def main(argv=None):
  p = _common.parser(__doc__)
  p.add_argument('--max-gb', type=float, default=min(4.0, 0.3 * available_gb()),
                 help='skip the naive formulation where XLA:CPU would allocate more than this '
                      'for its int32 comparison/counts (default: %(default).1f)')
  args = p.parse_args(argv)
  from jaxdisp import label_dispersion  # pylint: disable=g-import-not-at-top

  grid = QUICK if args.quick else FULL
  on_cpu = jax.default_backend() == 'cpu'
  t_start = time.perf_counter()
  cases = []
  for n in grid['N']:
    for t_rows in grid['T']:
      for c in grid['C']:
        key = jax.random.key(n * 1000 + t_rows * 10 + c)
        history = jax.block_until_ready(
            jax.random.randint(key, (t_rows, n), 0, c, dtype=jnp.int32).astype(jnp.int8))
        tc = copy_time(history)
        bandwidth = 2 * t_rows * n / tc['median_s']
        bound = (t_rows * n + 4 * n) / bandwidth
        row = {'N': n, 'T': t_rows, 'C': c, 'history_bytes': t_rows * n,
               'copy_s': tc['median_s'], 'bandwidth_GBps': bandwidth / 1e9, 'bound_s': bound}
        tj, out = timed(lambda h, c=c: label_dispersion(h, c), history)
        out = np.asarray(out)
        cols = min(n, 4096)
        same_numpy = bool(np.array_equal(out[:cols],
                                         numpy_dispersion(np.asarray(history[:, :cols]), c)))
        row['jaxdisp'] = {**tj, 'fraction_of_bound': bound / tj['median_s'],
                          'identical_to_numpy_subset': same_numpy}
        # XLA:CPU rewrites a reduction over more than 32 rows into a reduce-window, whose
        # input, the [T, N, C] int32 comparison, is then materialised; else only [N, C] int32.
        big = t_rows > 32
        materialised_gb = 4 * (t_rows if big else 1) * n * c / 2**30
        if on_cpu and materialised_gb > args.max_gb:
          what = '[T, N, C]' if big else '[N, C]'
          row['naive'] = {'skipped': f'XLA:CPU would materialise a {materialised_gb:.1f} GB '
                                     f'{what} int32 array (> --max-gb {args.max_gb:.1f})'}
        else:
          tn, ref = timed(lambda h, c=c: naive_dispersion(h, c), history)
          row['naive'] = {**tn, 'fraction_of_bound': bound / tn['median_s'],
                          'identical_to_jaxdisp': bool(np.array_equal(out, np.asarray(ref)))}
          row['speedup_vs_naive'] = tn['median_s'] / tj['median_s']
        cases.append(row)
        print(f'  N={n:>7} T={t_rows:>3} C={c:>3}: bound {bound * 1e3:8.3f} ms, jaxdisp '
              f'{tj["median_s"] * 1e3:8.2f} ms, naive '
              + (f'{row["naive"]["median_s"] * 1e3:9.2f} ms' if 'median_s' in row['naive']
                 else '  skipped'), flush=True)
        del history

  def fractions(impl):
    return [r[impl]['fraction_of_bound'] for r in cases if 'fraction_of_bound' in r[impl]]

  def at(n, t_rows, c, impl):
    for r in cases:
      if (r['N'], r['T'], r['C']) == (n, t_rows, c):
        return r[impl].get('fraction_of_bound')
    return None

  ref_point = (10**4, 25, 10) if args.quick else (10**5, 100, 10)
  identical = all(r['jaxdisp']['identical_to_numpy_subset']
                  and r['naive'].get('identical_to_jaxdisp', True) for r in cases)
  result = {
      'benchmark': 'dispersion_kernel', 'quick': args.quick, 'machine': _common.machine_info(),
      'max_gb': args.max_gb, 'cases': cases,
      'headline': {
          'reference_point': dict(zip(('N', 'T', 'C'), ref_point)),
          'jaxdisp_fraction_of_bound': at(*ref_point, 'jaxdisp'),
          'naive_fraction_of_bound': at(*ref_point, 'naive'),
          'jaxdisp_fraction_median': _common.median(fractions('jaxdisp')),
          'jaxdisp_fraction_max': max(fractions('jaxdisp')),
          'naive_cases_skipped': sum('skipped' in r['naive'] for r in cases),
          'identical': identical,
      },
      'wall_s': time.perf_counter() - t_start,
  }
  path = _common.write_json(args.out, 'dispersion_kernel', args.quick, result)

  print(f'\nlabel_dispersion on {jax.devices()[0].platform} ({os.cpu_count()} cores), int8 '
        f'history; times in ms; fraction = bandwidth bound / time; {path}')
  rows = []
  for r in cases:
    j, nv = r['jaxdisp'], r['naive']
    rows.append([r['N'], r['T'], r['C'], r['bandwidth_GBps'], r['bound_s'] * 1e3,
                 j['median_s'] * 1e3, j['fraction_of_bound'],
                 nv['median_s'] * 1e3 if 'median_s' in nv else 'skipped',
                 nv.get('fraction_of_bound'), r.get('speedup_vs_naive'),
                 'yes' if j['identical_to_numpy_subset'] and nv.get('identical_to_jaxdisp', True)
                 else 'NO'])
  print(_common.table(['N', 'T', 'C', 'copy GB/s', 'bound', 'jaxdisp', 'fraction', 'naive',
                       'fraction', 'speedup', 'identical'], rows))
  return result


if __name__ == '__main__':
  main()
