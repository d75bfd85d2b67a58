"""Smoke test of the benchmark scripts: ``benchmarks/run_all.py --quick`` runs and writes JSON.

No timing is asserted (the machine may be shared); only that every benchmark ran, wrote its
result file and reports the headline keys the README quotes.
"""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

EXPECTED = {
    'throughput': {'round_efficiency', 'round_efficiency_by_spec', 'pool_scoring_efficiency',
                   'train_efficiency'},
    'dispersion_kernel': {'jaxdisp_fraction_of_bound', 'naive_fraction_of_bound', 'identical',
                          'reference_point'},
    'compilations': {'compilations_round0', 'compilations_later_rounds',
                     'max_compilations_after_round0'},
    'device_scaling': {'devices', 'selected_ids_identical', 'max_accuracy_diff'},
    'torch_reference': {'measured', 'pool_scoring_speedup', 'round_speedup'},
    'record_cost': {'record_cost_ratio', 'record_cost_ratio_max', 'goal'},
}


def test_run_all_quick_writes_every_result(tmp_path):
  env = dict(os.environ)
  # run_all strips the test suite's forced device count itself; device_scaling sets its own.
  proc = subprocess.run([sys.executable, os.path.join(REPO, 'benchmarks', 'run_all.py'),
                         '--quick', '--out', str(tmp_path)], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  with open(tmp_path / 'run_all_quick.json') as f:
    summary = json.load(f)
  assert summary['failed'] == [] and summary['quick'] is True
  assert {r['benchmark'] for r in summary['summary'] if r['benchmark']} == set(EXPECTED)
  for name, keys in EXPECTED.items():
    with open(tmp_path / f'{name}_quick.json') as f:
      result = json.load(f)
    assert result['benchmark'] == name and result['quick'] is True
    assert {'jax', 'cpu_count', 'devices'} <= set(result['machine'])
    assert keys <= set(result['headline']), (name, sorted(result['headline']))
  with open(tmp_path / 'device_scaling_quick.json') as f:
    scaling = json.load(f)
  assert [r['devices'] for r in scaling['runs']] == [1, 2, 4, 8]
  assert all(r['device_count'] == r['devices'] for r in scaling['runs'])
  with open(tmp_path / 'compilations_quick.json') as f:
    comp = json.load(f)
  assert [w['window'] for w in comp['windows']] == ['setup'] + [f'round {r}' for r in range(4)]
  with open(tmp_path / 'dispersion_kernel_quick.json') as f:
    assert json.load(f)['headline']['identical'] is True
