r"""XLA compilations per active-learning round over a 4-round run (goal: 0 after round 0).

  python benchmarks/compilations.py           # tiny synthetic config, 6 epochs, rounds 0..3
  python benchmarks/compilations.py --quick   # the same with 2 epochs

Runs ``jaxdisp.experiment.run`` (the whole CLI path: checkpoints, outputs, progress) on the
TINY config of ``tests/_helpers.py`` with ``al.rounds=3`` (4 rounds: 100 labels + 3 x 50,
so the labeled set grows every round but stays in one capacity bucket) in a temporary workdir,
with ``jaxdisp.compile_counter`` counting every real XLA compilation (``jax.monitoring``'s
backend-compile event, by function name). ``experiment.Runner.round`` is wrapped to take a snapshot at
the start of each round, so round ``r``'s count covers everything from its start to the start of
round ``r + 1`` (its training, scoring, selection, checkpoint and output writing); ``setup`` is
everything before round 0 (data, experiment, restore). JAX's persistent compilation cache is
switched off here, since a cache hit would hide a recompilation. ``--quick`` also compiles with
``--xla_backend_optimization_level=0`` (half the compile time; the counts do not change).
Writes ``<out>/compilations[_quick].json``.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # pylint: disable=g-import-not-at-top,wrong-import-position


def main(argv=None):
  p = _common.parser(__doc__)
  p.add_argument('--rounds', type=int, default=3, help='al.rounds (the run has rounds + 1)')
  args = p.parse_args(argv)
  if args.quick:  # before jax initialises its backend
    _common.add_xla_flag('--xla_backend_optimization_level=0')
  _common.quiet_logs()
  from jaxdisp import compile_counter  # pylint: disable=g-import-not-at-top
  compile_counter.enable()  # before anything compiles
  import jax  # pylint: disable=g-import-not-at-top
  # A persistent-cache hit skips the XLA compilation (and its event): count real compilations.
  jax.config.update('jax_enable_compilation_cache', False)
  from jaxdisp import experiment  # pylint: disable=g-import-not-at-top

  overrides = {**_common.TINY, 'al.rounds': args.rounds}
  if args.quick:
    overrides.update({'train.epochs': 2, 'checkpoint.every_epochs': 1})
  cfg = _common.demo_config(overrides)

  marks = []  # (round, compile counts at its start, time)
  original = experiment.Runner.round

  def counted_round(self, state):
    marks.append((int(state.round), compile_counter.compile_counts(), time.perf_counter()))
    return original(self, state)

  workdir = tempfile.mkdtemp(prefix='jaxdisp-compilations-')
  t0 = time.perf_counter()
  start = compile_counter.compile_counts()
  experiment.Runner.round = counted_round
  try:
    state = experiment.run(cfg, workdir)
  finally:
    experiment.Runner.round = original
    shutil.rmtree(workdir, ignore_errors=True)
  end = compile_counter.compile_counts()
  t_end = time.perf_counter()

  def diff(a, b):
    return {k: n - a.get(k, 0) for k, n in sorted(b.items()) if n != a.get(k, 0)}

  windows = [('setup', start, marks[0][1], marks[0][2] - t0)]
  for i, (r, counts, t) in enumerate(marks):
    nxt, t_next = (marks[i + 1][1], marks[i + 1][2]) if i + 1 < len(marks) else (end, t_end)
    windows.append((f'round {r}', counts, nxt, t_next - t))
  per = [{'window': name, 'compilations': sum(diff(a, b).values()), 'by_function': diff(a, b),
          'seconds': s} for name, a, b, s in windows]
  later = [w['compilations'] for w in per[2:]]
  result = {
      'benchmark': 'compilations', 'quick': args.quick, 'machine': _common.machine_info(),
      'config_overrides': overrides, 'devices': jax.device_count(),
      'num_labeled': [int(x) for x in state.num_labeled],
      'windows': per,
      'headline': {
          'compilations_setup': per[0]['compilations'],
          'compilations_round0': per[1]['compilations'],
          'compilations_later_rounds': later,
          'max_compilations_after_round0': max(later) if later else 0,
          'recompiling_functions_after_round0': sorted({f for w in per[2:]
                                                        for f in w['by_function']}),
      },
      'wall_s': t_end - t0,
  }
  path = _common.write_json(args.out, 'compilations', args.quick, result)
  print(f'\nXLA compilations per round (experiment.run, tiny config, {jax.device_count()} '
        f'device(s), labeled per round {result["num_labeled"]}); {path}')
  print(_common.table(['window', 'compilations', 'seconds', 'functions compiled'],
                      [[w['window'], w['compilations'], w['seconds'],
                        ', '.join(f'{k} x{n}' if n > 1 else k
                                  for k, n in w['by_function'].items())[:90]]
                       for w in per]))
  return result


if __name__ == '__main__':
  main()
