r"""The same tiny active-learning run on 1, 2, 4 and 8 simulated CPU devices: do the results match?

  python benchmarks/device_scaling.py           # TINY config (6 epochs, rounds 0..2)
  python benchmarks/device_scaling.py --quick   # 3 epochs, rounds 0..1
  python benchmarks/device_scaling.py --devices 1,2,4,8

Each device count runs in its own process with
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` and ``JAX_PLATFORMS=cpu`` set before jax is
imported; the run is ``jaxdisp.al_loop.al_round``
repeated on the TINY config of ``tests/test_experiment.py`` (600 synthetic 16x16 images, small CNN
width 8, batch 32, 100 + 50 per round), data-parallel over all N devices. Reported per N: process
wall time, round 0 (includes compilation) and the mean of later rounds; and, against N = 1, whether
each round's selected ids are identical (and their overlap) and the largest test-accuracy
difference.

``--quick`` compiles with ``--xla_backend_optimization_level=0`` (half the compile time; every
device count gets the same flags).

This measures the *correctness* of scaling. The simulated devices are threads sharing the same
CPU cores, so more devices cannot be faster here (per-device batches get smaller and the
all-reduces are real work); speed-up must be measured on real accelerators (same command with
``--no-simulate`` on a multi-GPU/TPU host: it then uses the first N real devices).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # pylint: disable=g-import-not-at-top,wrong-import-position

MARK = 'DEVICE_SCALING_RESULT '


def overrides(quick: bool) -> dict:
  o = dict(_common.TINY)
  if quick:
    o.update({'train.epochs': 3, 'al.rounds': 1})
  return o


def worker(n: int, quick: bool) -> None:
  """Runs in the child process: N devices, the whole tiny run; prints one JSON line."""
  _common.quiet_logs()
  import jax  # pylint: disable=g-import-not-at-top
  from jaxdisp import al_loop, data  # pylint: disable=g-import-not-at-top
  cfg = _common.demo_config({**overrides(quick), 'num_devices': n})
  t0 = time.perf_counter()
  dataset = data.load_dataset(cfg.dataset)
  exp = al_loop.Experiment.create(cfg, dataset)
  state = exp.initial_state()
  seconds = []
  while not al_loop.is_finished(state, cfg):
    t = time.perf_counter()
    state = al_loop.al_round(state, exp)
    seconds.append(time.perf_counter() - t)
  rounds = int(state.round)
  out = {'devices': n, 'device_count': jax.device_count(), 'mesh_size': exp.mesh.size,
         'platform': jax.devices()[0].platform, 'round_seconds': seconds,
         'run_seconds': time.perf_counter() - t0,
         'selected': [state.selected(r).tolist() for r in range(rounds)],
         'test_accuracy': [float(a) for a in state.test_accuracy[:rounds]],
         'num_labeled': [int(x) for x in state.num_labeled[:rounds]]}
  print(MARK + json.dumps(out), flush=True)


def child_env(n: int, simulate: bool, quick: bool) -> dict:
  env = dict(os.environ)
  flags = [f for f in env.get('XLA_FLAGS', '').split()
           if not f.startswith('--xla_force_host_platform_device_count')]
  if quick:
    flags.append('--xla_backend_optimization_level=0')
  if simulate:
    flags.append(f'--xla_force_host_platform_device_count={n}')
    env['JAX_PLATFORMS'] = 'cpu'
  env['XLA_FLAGS'] = ' '.join(flags)
  env.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  return env


def main(argv=None):
  p = _common.parser(__doc__)
  p.add_argument('--devices', default='1,2,4,8')
  p.add_argument('--no-simulate', action='store_true',
                 help='use the real devices (do not force N host devices)')
  p.add_argument('--worker', type=int, default=0, help=argparse_suppress())
  args = p.parse_args(argv)
  if args.worker:
    return worker(args.worker, args.quick)

  counts = [int(x) for x in args.devices.split(',')]
  runs, failures = [], {}
  t_start = time.perf_counter()
  for n in counts:
    cmd = [sys.executable, os.path.abspath(__file__), '--worker', str(n)]
    if args.quick:
      cmd.append('--quick')
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=child_env(n, not args.no_simulate, args.quick),
                          capture_output=True, text=True, timeout=900, cwd=_common.REPO)
    wall = time.perf_counter() - t0
    lines = [l for l in proc.stdout.splitlines() if l.startswith(MARK)]
    if proc.returncode or not lines:
      failures[n] = (proc.stderr or proc.stdout)[-2000:]
      print(f'  {n} device(s): FAILED (exit {proc.returncode})\n{failures[n]}', flush=True)
      continue
    r = json.loads(lines[-1][len(MARK):])
    r['process_wall_s'] = wall
    runs.append(r)
    print(f'  {n} device(s): {wall:.1f} s', flush=True)

  base = runs[0] if runs else None
  for r in runs:
    sel_same, overlap = [], []
    for a, b in zip(base['selected'], r['selected']):
      sel_same.append(a == b)
      overlap.append(len(set(a) & set(b)) / max(len(a), 1) if a else 1.0)
    r['selected_identical_to_first'] = sel_same
    r['selected_overlap_with_first'] = overlap
    r['max_accuracy_diff_vs_first'] = max(abs(x - y) for x, y in
                                          zip(base['test_accuracy'], r['test_accuracy']))
    r['round0_s'] = r['round_seconds'][0]
    later = r['round_seconds'][1:]
    r['later_round_mean_s'] = sum(later) / len(later) if later else None

  all_same = bool(runs) and not failures and all(all(r['selected_identical_to_first'])
                                                 for r in runs)
  result = {
      'benchmark': 'device_scaling', 'quick': args.quick, 'machine': _common.machine_info(),
      'simulated': not args.no_simulate, 'config_overrides': overrides(args.quick),
      'runs': runs, 'failures': {str(k): v for k, v in failures.items()},
      'headline': {
          'devices': [r['devices'] for r in runs],
          'selected_ids_identical': all_same,
          'min_selected_overlap': min((min(r['selected_overlap_with_first']) for r in runs),
                                      default=None),
          'max_accuracy_diff': max((r['max_accuracy_diff_vs_first'] for r in runs),
                                   default=None),
          'process_wall_s': {str(r['devices']): r['process_wall_s'] for r in runs},
      },
      'wall_s': time.perf_counter() - t_start,
  }
  path = _common.write_json(args.out, 'device_scaling', args.quick, result)
  where = 'real devices' if args.no_simulate else f'simulated CPU devices on {os.cpu_count()} cores'
  rounds = len(base['selected']) if base else 0
  print(f'\ndevice scaling ({where}, tiny run, {rounds} rounds); {path}')
  print(_common.table(
      ['devices', 'process s', 'round 0 s', 'later rounds s', 'same ids per round',
       'id overlap', 'max |acc diff|'],
      [[r['devices'], r['process_wall_s'], r['round0_s'], r['later_round_mean_s'],
        ' '.join('yes' if s else 'NO' for s in r['selected_identical_to_first']) or '-',
        ' '.join(f'{o:.2f}' for o in r['selected_overlap_with_first']) or '-',
        r['max_accuracy_diff_vs_first']] for r in runs]))
  if not args.no_simulate:
    print('(simulated devices share the same cores: wall time cannot drop with N here)')
  return result


def argparse_suppress():
  import argparse  # pylint: disable=g-import-not-at-top
  return argparse.SUPPRESS


if __name__ == '__main__':
  main()
