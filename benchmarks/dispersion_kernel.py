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
* ``jaxdisp``: ``jaxdisp.label_dispersion(history, C)`` as shipped; fraction of bound =
  bound / time. Cases where XLA:CPU would allocate the ``[T, N, C]`` int32 comparison (see the
  README) beyond ``--max-gb`` are skipped and say so;
* ``blocked``: a prototype in this file, :func:`dispersion_blocked`, checked to give identical
  results (against jaxdisp where it ran, and always against NumPy on a column subset).

The prototype walks the pool in blocks of ``block`` columns (a ``fori_loop`` that writes each
block's result into a carried output buffer); per block it keeps the per-class counts
``[C, block]`` (uint8 when T <= 255) in cache and adds ``U`` history rows per inner iteration as
one elementwise fusion (compare with every class, add). No ``[T, N, C]`` or
``[N, C]`` array ever reaches memory; the history is read once. Work is still ``T * N * C``
compare-adds, so with C = 100 it is compute bound on a CPU. Writes
``<out>/dispersion_kernel[_quick].json``.
"""

from __future__ import annotations

import functools
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # pylint: disable=g-import-not-at-top,wrong-import-position

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
from jax import lax  # pylint: disable=g-import-not-at-top,wrong-import-position

FULL = dict(N=(10**4, 10**5, 10**6), T=(25, 100, 200), C=(10, 100))
QUICK = dict(N=(10**4,), T=(25,), C=(10, 100))


def _rows_per_iteration(t: int) -> int:
  """Rows added per loop iteration: T itself up to 32, else the divisor of T in [8, 32]
  closest to 16 (no padding copy), else 16 (the history is padded with -1 rows)."""
  if t <= 32:
    return t
  divisors = [u for u in range(8, 33) if t % u == 0]
  return min(divisors, key=lambda u: abs(u - 16)) if divisors else 16


@functools.partial(jax.jit, static_argnames=('num_classes', 'block'))
def dispersion_blocked(history: jax.Array, num_classes: int, block: int = 2048) -> jax.Array:
  """Same result as ``jaxdisp.label_dispersion(history, num_classes)`` (default options)."""
  t_rows, n = history.shape
  block = max(1, min(block, n))
  u = _rows_per_iteration(t_rows)
  t_pad = -(-t_rows // u) * u
  if t_pad != t_rows:
    history = jnp.pad(history, ((0, t_pad - t_rows), (0, 0)), constant_values=-1)
  acc = jnp.uint8 if t_rows <= 255 else jnp.uint16 if t_rows <= 65535 else jnp.int32
  classes = jnp.arange(num_classes, dtype=history.dtype)[:, None]

  def columns(h, start, width: int):
    def add_rows(j, counts):
      rows = lax.dynamic_slice(h, (j * u, start), (u, width))
      for r in range(u):  # one fusion: U compares with every class, U adds
        counts = counts + (rows[r][None] == classes).astype(acc)
      return counts

    counts = lax.fori_loop(0, t_pad // u, add_rows, jnp.zeros((num_classes, width), acc))
    f = counts.max(0).astype(jnp.int32)
    recorded = counts.astype(jnp.int32).sum(0)
    return jnp.where(recorded > 0, (recorded - f).astype(jnp.float32)
                     / jnp.maximum(recorded, 1).astype(jnp.float32), jnp.float32(0))

  def block_step(i, carry):  # the result buffer is carried and updated in place
    h, out = carry
    return h, lax.dynamic_update_slice(out, columns(h, i * block, block), (i * block,))

  full = n // block
  _, out = lax.fori_loop(0, full, block_step, (history, jnp.zeros((n,), jnp.float32)))
  if n - full * block:
    out = lax.dynamic_update_slice(out, columns(history, full * block, n - full * block),
                                   (full * block,))
  return out


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
                 help='skip jaxdisp.label_dispersion where XLA:CPU would allocate more than '
                      'this for its int32 comparison/counts (default: %(default).1f)')
  p.add_argument('--block', type=int, default=2048, help='prototype block width (columns)')
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
        # XLA:CPU rewrites a reduction over more than 32 rows into a reduce-window, whose
        # input, the [T, N, C] int32 comparison, is then materialised; else only [N, C] int32.
        big = t_rows > 32
        materialised_gb = 4 * (t_rows if big else 1) * n * c / 2**30
        if on_cpu and materialised_gb > args.max_gb:
          what = '[T, N, C]' if big else '[N, C]'
          row['jaxdisp'] = {'skipped': f'XLA:CPU would materialise a {materialised_gb:.1f} GB '
                                       f'{what} int32 array (> --max-gb {args.max_gb:.1f})'}
          ref = None
        else:
          tj, ref = timed(lambda h, c=c: label_dispersion(h, c), history)
          row['jaxdisp'] = {**tj, 'fraction_of_bound': bound / tj['median_s']}
          ref = np.asarray(ref)
        tb, out = timed(lambda h, c=c: dispersion_blocked(h, c, args.block), history)
        out = np.asarray(out)
        cols = min(n, 4096)
        same_numpy = bool(np.array_equal(out[:cols],
                                         numpy_dispersion(np.asarray(history[:, :cols]), c)))
        same_jaxdisp = None if ref is None else bool(np.array_equal(out, ref))
        row['blocked'] = {**tb, 'fraction_of_bound': bound / tb['median_s'],
                          'identical_to_jaxdisp': same_jaxdisp,
                          'identical_to_numpy_subset': same_numpy}
        if ref is not None:
          row['speedup_blocked_vs_jaxdisp'] = tj['median_s'] / tb['median_s']
        cases.append(row)
        print(f'  N={n:>7} T={t_rows:>3} C={c:>3}: bound {bound * 1e3:8.3f} ms, jaxdisp '
              + (f'{row["jaxdisp"]["median_s"] * 1e3:9.2f} ms' if ref is not None else
                 '  skipped   ')
              + f', blocked {tb["median_s"] * 1e3:8.2f} ms', flush=True)
        del history

  def fractions(impl):
    return [r[impl]['fraction_of_bound'] for r in cases if 'fraction_of_bound' in r[impl]]

  def at(n, t_rows, c, impl):
    for r in cases:
      if (r['N'], r['T'], r['C']) == (n, t_rows, c):
        return r[impl].get('fraction_of_bound')
    return None

  ref_point = (10**4, 25, 10) if args.quick else (10**5, 100, 10)
  result = {
      'benchmark': 'dispersion_kernel', 'quick': args.quick, 'machine': _common.machine_info(),
      'max_gb': args.max_gb, 'block': args.block, 'cases': cases,
      'headline': {
          'reference_point': dict(zip(('N', 'T', 'C'), ref_point)),
          'jaxdisp_fraction_of_bound': at(*ref_point, 'jaxdisp'),
          'blocked_fraction_of_bound': at(*ref_point, 'blocked'),
          'jaxdisp_fraction_median': _common.median(fractions('jaxdisp')) if fractions(
              'jaxdisp') else None,
          'blocked_fraction_median': _common.median(fractions('blocked')),
          'jaxdisp_cases_skipped': sum('skipped' in r['jaxdisp'] for r in cases),
          'blocked_identical': all(r['blocked']['identical_to_numpy_subset']
                                   and r['blocked']['identical_to_jaxdisp'] is not False
                                   for r in cases),
      },
      'wall_s': time.perf_counter() - t_start,
  }
  path = _common.write_json(args.out, 'dispersion_kernel', args.quick, result)

  print(f'\nlabel_dispersion on {jax.devices()[0].platform} ({os.cpu_count()} cores), int8 '
        f'history; times in ms; fraction = bandwidth bound / time; {path}')
  rows = []
  for r in cases:
    j, b = r['jaxdisp'], r['blocked']
    rows.append([r['N'], r['T'], r['C'], r['bandwidth_GBps'], r['bound_s'] * 1e3,
                 j['median_s'] * 1e3 if 'median_s' in j else 'skipped',
                 j.get('fraction_of_bound'), b['median_s'] * 1e3, b['fraction_of_bound'],
                 r.get('speedup_blocked_vs_jaxdisp'),
                 'yes' if b['identical_to_numpy_subset'] and b['identical_to_jaxdisp'] is not False
                 else 'NO'])
  print(_common.table(['N', 'T', 'C', 'copy GB/s', 'bound', 'jaxdisp', 'fraction', 'blocked',
                       'fraction', 'speedup', 'identical'], rows))
  return result


if __name__ == '__main__':
  main()
