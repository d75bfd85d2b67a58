r"""Runs every benchmark and prints one summary table of the headline numbers against their goals.

  python benchmarks/run_all.py --quick     # smoke run: tiny sizes, 2 at a time (~1.5 min, 2 cores)
  python benchmarks/run_all.py             # the numbers in benchmarks/README.md (one at a time)
  python benchmarks/run_all.py --only throughput,dispersion_kernel --out /tmp/bench

Each benchmark runs in its own process (``python benchmarks/<name>.py [--quick] --out OUT``), so
device-count flags and jax state never leak between them; a forced host device count in
``XLA_FLAGS`` (e.g. the test suite's 4 simulated devices) is removed, since every benchmark but
``device_scaling`` measures one device and that one sets its own. Writes
``<out>/run_all[_quick].json`` (``run_all_only[_quick].json`` with ``--only``; summary rows,
per-benchmark exit status and wall time) next to the benchmarks' own JSON files; exits 1 if any
benchmark failed.

``--quick`` numbers are a smoke test, not measurements: the sizes are tiny, two benchmarks run
at the same time (``--jobs``), and a fresh persistent compilation cache is shared between them
(``compilations`` switches it off for itself).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # pylint: disable=g-import-not-at-top,wrong-import-position

# Longest first, so that two lanes finish together; torch_reference after throughput, whose
# first part compiles the same round programs.
BENCHMARKS = ('throughput', 'device_scaling', 'compilations', 'dispersion_kernel', 'record_cost',
              'torch_reference')


def child_env(cache_dir: str | None) -> dict:
  env = dict(os.environ)
  flags = [f for f in env.get('XLA_FLAGS', '').split()
           if not f.startswith('--xla_force_host_platform_device_count')]
  env['XLA_FLAGS'] = ' '.join(flags)
  env.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  if cache_dir:
    env['JAX_COMPILATION_CACHE_DIR'] = cache_dir
    env['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
    env['JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES'] = '-1'
  return env


def run_benchmarks(names, out: str, quick: bool, jobs: int, env: dict) -> dict:
  """Runs the scripts, at most ``jobs`` at a time; prints each one's output when it ends."""
  pending, running, done = list(names), {}, {}
  while pending or running:
    while pending and len(running) < jobs:
      name = pending.pop(0)
      cmd = [sys.executable, os.path.join(_common.HERE, f'{name}.py'), '--out', out]
      if quick:
        cmd.append('--quick')
      log = tempfile.TemporaryFile(mode='w+')
      proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True, env=env,
                              cwd=_common.REPO)
      running[name] = (proc, log, time.perf_counter())
      print(f'[run_all] started {name}', flush=True)
    time.sleep(0.2)
    for name, (proc, log, t0) in list(running.items()):
      if proc.poll() is None:
        continue
      wall = time.perf_counter() - t0
      log.seek(0)
      output = log.read()
      log.close()
      del running[name]
      done[name] = {'returncode': proc.returncode, 'wall_s': wall}
      print(f'\n===== {name} (exit {proc.returncode}, {wall:.0f} s) =====\n{output.rstrip()}',
            flush=True)
  return done


def load(out: str, name: str, quick: bool):
  path = os.path.join(out, f'{name}_quick.json' if quick else f'{name}.json')
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def summary_rows(results: dict, quick: bool = False) -> list[list]:
  """[benchmark, metric, value, goal, verdict] for the headline numbers.

  With ``quick``, timing-based numbers get no verdict (tiny sizes, benchmarks run concurrently);
  correctness numbers (same ids, compilation counts) keep theirs.
  """
  rows = []

  def add(bench, metric, value, goal, ok, timing=True):
    if value is None or ok is None:
      verdict = '-'
    elif quick and timing:
      verdict = 'n/a (quick)'
    else:
      verdict = 'meets' if ok else 'below goal'
    rows.append([bench, metric, value, goal, verdict])

  t = (results.get('throughput') or {}).get('headline')
  if t:
    add('throughput', 'round efficiency (model-only / actual)', t['round_efficiency'], '>= 0.85',
        t['round_efficiency'] >= 0.85)
    for name, v in t['round_efficiency_by_spec'].items():
      add('', f'  round {name}', v, '>= 0.85', v >= 0.85)
    add('', 'pool-scoring efficiency (in-epoch record path)', t['pool_scoring_efficiency'],
        '', None)
    add('', 'train efficiency', t['train_efficiency'], '', None)
  d = (results.get('dispersion_kernel') or {}).get('headline')
  if d:
    p = d['reference_point']
    at = f'N={p["N"]:.0e} T={p["T"]} C={p["C"]}'
    v = d['jaxdisp_fraction_of_bound']
    add('dispersion_kernel', f'label_dispersion fraction of bandwidth bound ({at})', v,
        '>= 0.5', None if v is None else v >= 0.5)
    add('', '  median over sizes', d['jaxdisp_fraction_median'], '>= 0.5',
        d['jaxdisp_fraction_median'] >= 0.5)
    add('', '  best size', d['jaxdisp_fraction_max'], '>= 0.5', d['jaxdisp_fraction_max'] >= 0.5)
    if d['naive_fraction_of_bound'] is not None:
      add('', f'  naive [T,N,C] formulation ({at})', d['naive_fraction_of_bound'], '', None)
    add('', '  identical results (jaxdisp, naive, NumPy)', 'yes' if d['identical'] else 'NO',
        'yes', d['identical'], timing=False)
  c = (results.get('compilations') or {}).get('headline')
  if c:
    add('compilations', 'XLA compilations in round 0', c['compilations_round0'], '', None)
    m = c['max_compilations_after_round0']
    fns = ', '.join(c['recompiling_functions_after_round0'])
    add('', 'max compilations per later round' + (f' ({fns})' if fns else ''), m, '0', m == 0,
        timing=False)
  s = (results.get('device_scaling') or {}).get('headline')
  if s:
    add('device_scaling', f'same selected ids on {s["devices"]} devices',
        'yes' if s['selected_ids_identical'] else 'NO', 'yes', s['selected_ids_identical'],
        timing=False)
    add('', 'max test-accuracy difference vs 1 device', s['max_accuracy_diff'], '0',
        s['max_accuracy_diff'] == 0, timing=False)
    if s.get('process_layouts'):
      same = s['processes_selected_ids_identical']
      add('', f'same selected ids on {s["process_layouts"]} processes x devices',
          'yes' if same else 'NO', 'yes', same, timing=False)
  rc = (results.get('record_cost') or {}).get('headline')
  if rc:
    add('record_cost', 'record pass, every dynamics statistic / history alone',
        rc['record_cost_ratio'], f'<= {rc["goal"]}', rc['record_cost_ratio'] <= rc['goal'])
    add('', '  worst case', rc['record_cost_ratio_max'], f'<= {rc["goal"]}',
        rc['record_cost_ratio_max'] <= rc['goal'])
  r = (results.get('torch_reference') or {}).get('headline')
  if r:
    if not r.get('measured'):
      add('torch_reference', 'speedup vs plain PyTorch', 'not measured (torch missing)', '', None)
    else:
      add('torch_reference', 'pool-scoring speedup (torch DataLoader / jaxdisp)',
          r['pool_scoring_speedup'], '>= 1.0', r['pool_scoring_speedup'] >= 1.0)
      add('', 'train speedup', r['train_speedup'], '', None)
      add('', 'whole-round speedup', r['round_speedup'], '(report)', None)
      if r.get('batched_round_speedup') is not None:
        add('', 'vs batched PyTorch: pool-scoring speedup', r['batched_pool_scoring_speedup'],
            '(report)', None)
        add('', '  train speedup', r['batched_train_speedup'], '', None)
        add('', '  whole-round speedup', r['batched_round_speedup'], '(report)', None)
  return rows


def main(argv=None):
  p = _common.parser(__doc__)
  p.add_argument('--jobs', type=int, default=0,
                 help='benchmarks run at the same time (default: 2 with --quick, else 1)')
  p.add_argument('--only', default='', help='comma-separated subset of ' + ','.join(BENCHMARKS))
  args = p.parse_args(argv)
  names = [n for n in BENCHMARKS if not args.only or n in args.only.split(',')]
  unknown = set(args.only.split(',')) - set(BENCHMARKS) if args.only else set()
  if unknown:
    p.error(f'unknown benchmark(s): {", ".join(sorted(unknown))}')
  jobs = args.jobs or (2 if args.quick else 1)
  os.makedirs(args.out, exist_ok=True)

  t0 = time.perf_counter()
  cache = None
  if args.quick and not os.environ.get('JAX_COMPILATION_CACHE_DIR'):
    cache = tempfile.TemporaryDirectory(prefix='jaxdisp-bench-cache-')
  try:
    status = run_benchmarks(names, args.out, args.quick, jobs,
                            child_env(cache.name if cache else None))
  finally:
    if cache:
      cache.cleanup()
  wall = time.perf_counter() - t0

  results = {n: load(args.out, n, args.quick) for n in names}
  for n in names:
    if results[n] is None and status[n]['returncode'] == 0:
      status[n]['returncode'] = 'no JSON written'
  rows = summary_rows(results, args.quick)
  failed = [n for n in names if status[n]['returncode'] != 0]
  summary = {
      'benchmark': 'run_all', 'quick': args.quick, 'jobs': jobs, 'wall_s': wall,
      'machine': _common.machine_info(), 'status': status, 'failed': failed,
      'summary': [dict(zip(('benchmark', 'metric', 'value', 'goal', 'verdict'), r))
                  for r in rows],
      'files': {n: os.path.join(args.out, f'{n}_quick.json' if args.quick else f'{n}.json')
                for n in names},
  }
  # A subset run (--only) must not replace the summary of the full run.
  path = _common.write_json(args.out, 'run_all_only' if args.only else 'run_all', args.quick,
                            summary)
  print(f'\n===== summary ({"--quick: smoke sizes, not measurements; " if args.quick else ""}'
        f'{wall:.0f} s in all, {jobs} at a time) =====')
  print(_common.table(['benchmark', 'metric', 'value', 'goal', 'verdict'], rows))
  print(_common.table(['benchmark', 'exit', 'wall s'],
                      [[n, status[n]['returncode'], status[n]['wall_s']] for n in names]))
  print(path)
  if failed:
    print(f'FAILED: {", ".join(failed)}', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
