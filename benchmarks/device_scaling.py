r"""The same tiny active-learning run on 1, 2, 4 and 8 simulated CPU devices, and on 2 processes.

  python benchmarks/device_scaling.py           # TINY config (6 epochs, rounds 0..2)
  python benchmarks/device_scaling.py --quick   # 3 epochs, rounds 0..1, no process runs
  python benchmarks/device_scaling.py --devices 1,2,4,8 --processes 2

Each device count runs in its own process with
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` and ``JAX_PLATFORMS=cpu`` set before jax is
imported; the run is ``jaxdisp.rounds.al_round``
repeated on the TINY config of ``tests/test_experiment.py`` (600 synthetic 16x16 images, small CNN
width 8, batch 32, 100 + 50 per round), data-parallel over all N devices. Reported per N: process
wall time, round 0 (includes compilation) and the mean of later rounds; and, against N = 1, whether
each round's selected ids are identical (and their overlap) and the largest test-accuracy
difference.

**Processes** (``--processes 2``, the default without ``--quick``): the same run as P processes
on localhost (``jax.distributed`` with gloo collectives) with ``devices / P`` simulated devices
each, for the largest device count that P divides (up to 4), the training images sharded over
the processes (``dataset.placement=auto``): wall time, rounds, and whether it selects what one
process with as many devices selects.

Reported per run: process wall time, round 0 (includes compilation), the mean of later rounds
and the labeled images trained per second in later rounds (epochs x labeled / round time, so
pool scoring is included in the time).

``--quick`` compiles with ``--xla_backend_optimization_level=0`` (half the compile time; every
device count gets the same flags).

This measures the *correctness* of scaling. The simulated devices are threads sharing the same
CPU cores, so more devices cannot be faster here (per-device batches get smaller and the
all-reduces are real work); speed-up must be measured on real accelerators (same command with
``--no-simulate`` on a multi-GPU/TPU host: it then uses the first N real devices). On a Cloud TPU
VM after ``./launch.sh ... setup``: ``gcloud compute tpus tpu-vm ssh NAME --zone=ZONE --worker=0
--command='cd ~/jaxdisp && ~/jaxdisp-venv/bin/python benchmarks/device_scaling.py --no-simulate
--devices 1,2,4 --processes 0'`` on a v4-8 (4 chips, one host); on a multi-host slice (v5e-16: 4
hosts x 4 chips) run ``python -m jaxdisp.main`` through ``./launch.sh run`` with a
``--config.num_devices`` per run and compare the ``seconds`` of ``results.json``, since every host
must run the same program.
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


def worker(n: int, quick: bool, processes: int = 1, process_id: int = 0,
           coordinator: str = '') -> None:
  """Runs in the child process: N devices (over ``processes`` processes), the whole tiny run;
  prints one JSON line (process 0 only)."""
  _common.quiet_logs()
  import jax  # pylint: disable=g-import-not-at-top
  from jaxdisp import data, rounds, train  # pylint: disable=g-import-not-at-top
  if processes > 1:
    from jaxdisp import parallel  # pylint: disable=g-import-not-at-top
    parallel.initialize_distributed(coordinator, processes, process_id)
  cfg = _common.demo_config({**overrides(quick), 'num_devices': n})
  t0 = time.perf_counter()
  dataset = data.load_dataset(cfg.dataset, lazy=train.shards_train_images(cfg))
  exp = rounds.Experiment.create(cfg, dataset)
  state = exp.initial_state()
  seconds = []
  while not rounds.is_finished(state, cfg):
    t = time.perf_counter()
    state = rounds.al_round(state, exp)
    seconds.append(time.perf_counter() - t)
  rounds = int(state.round)
  if jax.process_index():
    return
  out = {'devices': n, 'processes': processes, 'device_count': jax.device_count(),
         'mesh_size': exp.mesh.size, 'epochs': cfg.train.epochs,
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
  p.add_argument('--processes', default=None,
                 help='comma-separated process counts to run the largest divisible device '
                      'count on (default: 2; none with --quick; 0 = none)')
  p.add_argument('--worker', type=int, default=0, help=argparse_suppress())
  p.add_argument('--worker-processes', type=int, default=1, help=argparse_suppress())
  p.add_argument('--worker-process-id', type=int, default=0, help=argparse_suppress())
  p.add_argument('--worker-coordinator', default='', help=argparse_suppress())
  args = p.parse_args(argv)
  if args.worker:
    return worker(args.worker, args.quick, args.worker_processes, args.worker_process_id,
                  args.worker_coordinator)

  counts = [int(x) for x in args.devices.split(',')]
  process_counts = [int(x) for x in (args.processes if args.processes is not None else
                                     ('' if args.quick else '2')).split(',') if int(x or 0) > 1]
  runs, process_runs, failures = [], [], {}
  t_start = time.perf_counter()

  def launch(n: int, processes: int = 1):
    """Runs the tiny experiment on n devices over ``processes`` processes; its result or None."""
    cmd = [sys.executable, os.path.abspath(__file__), '--worker', str(n)]
    if args.quick:
      cmd.append('--quick')
    name = f'{n} device(s)' + (f' over {processes} processes' if processes > 1 else '')
    extra = []
    if processes > 1:
      port = _common.free_port()
      extra = [['--worker-processes', str(processes), '--worker-process-id', str(i),
                '--worker-coordinator', f'localhost:{port}'] for i in range(processes)]
    t0 = time.perf_counter()
    procs = [subprocess.Popen(cmd + e, env=child_env(n // processes, not args.no_simulate,
                                                     args.quick),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=_common.REPO) for e in (extra or [[]])]
    outs = [proc.communicate(timeout=900) for proc in procs]
    wall = time.perf_counter() - t0
    lines = [l for l in outs[0][0].splitlines() if l.startswith(MARK)]
    if any(proc.returncode for proc in procs) or not lines:
      failures[name] = '\n'.join((err or out)[-2000:] for out, err in outs)
      print(f'  {name}: FAILED\n{failures[name]}', flush=True)
      return None
    r = json.loads(lines[-1][len(MARK):])
    r['process_wall_s'] = wall
    print(f'  {name}: {wall:.1f} s', flush=True)
    return r

  for n in counts:
    r = launch(n)
    if r is not None:
      runs.append(r)
  for procs in process_counts:
    n = max((c for c in counts if c % procs == 0 and c <= 4), default=None)
    r = launch(n, procs) if n else None
    if r is not None:
      process_runs.append(r)

  base = runs[0] if runs else None
  for r in runs + process_runs:
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
    r['labeled_images_per_s'] = (r['epochs'] * sum(r['num_labeled'][1:]) / sum(later)
                                 if later else None)
  for r in process_runs:  # against one process with as many devices
    single = next((x for x in runs if x['devices'] == r['devices']), None)
    r['selected_identical_to_one_process'] = single is not None and all(
        a == b for a, b in zip(single['selected'], r['selected']))

  all_same = bool(runs) and not failures and all(all(r['selected_identical_to_first'])
                                                 for r in runs)
  result = {
      'benchmark': 'device_scaling', 'quick': args.quick, 'machine': _common.machine_info(),
      'simulated': not args.no_simulate, 'config_overrides': overrides(args.quick),
      'runs': runs, 'process_runs': process_runs, 'failures': failures,
      'headline': {
          'devices': [r['devices'] for r in runs],
          'selected_ids_identical': all_same,
          'min_selected_overlap': min((min(r['selected_overlap_with_first']) for r in runs),
                                      default=None),
          'max_accuracy_diff': max((r['max_accuracy_diff_vs_first'] for r in runs),
                                   default=None),
          'process_wall_s': {str(r['devices']): r['process_wall_s'] for r in runs},
          'process_layouts': [f'{r["processes"]}x{r["devices"] // r["processes"]}'
                              for r in process_runs],
          'processes_selected_ids_identical': all(r['selected_identical_to_one_process']
                                                  for r in process_runs),
      },
      'wall_s': time.perf_counter() - t_start,
  }
  path = _common.write_json(args.out, 'device_scaling', args.quick, result)
  where = 'real devices' if args.no_simulate else f'simulated CPU devices on {os.cpu_count()} cores'
  rounds = len(base['selected']) if base else 0
  print(f'\ndevice scaling ({where}, tiny run, {rounds} rounds); {path}')
  print(_common.table(
      ['processes x devices', 'wall s', 'round 0 s', 'later rounds s', 'labeled img/s',
       'same ids per round (vs 1 device)', 'id overlap', 'max |acc diff|'],
      [[f'{r["processes"]} x {r["devices"] // r["processes"]}', r['process_wall_s'],
        r['round0_s'], r['later_round_mean_s'], r['labeled_images_per_s'],
        ' '.join('yes' if s else 'NO' for s in r['selected_identical_to_first']) or '-',
        ' '.join(f'{o:.2f}' for o in r['selected_overlap_with_first']) or '-',
        r['max_accuracy_diff_vs_first']] for r in runs + process_runs]))
  if not args.no_simulate:
    print('(simulated devices share the same cores: wall time cannot drop with N here)')
  return result


def argparse_suppress():
  import argparse  # pylint: disable=g-import-not-at-top
  return argparse.SUPPRESS


if __name__ == '__main__':
  main()
