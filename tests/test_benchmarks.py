"""Smoke test of the benchmark scripts: ``benchmarks/run_all.py --quick`` runs and writes JSON.

No timing is asserted (the machine may be shared); only that every benchmark ran, wrote its
result file and reports the headline keys the README quotes.
"""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

EXPECTED = {
    'throughput': {'round_efficiency', 'round_efficiency_by_spec', 'pool_scoring_efficiency',
                   'train_efficiency'},
    'dispersion_kernel': {'jaxdisp_fraction_of_bound', 'naive_fraction_of_bound', 'identical',
                          'reference_point'},
    'compilations': {'compilations_round0', 'compilations_later_rounds',
                     'max_compilations_after_round0'},
    'device_scaling': {'devices', 'selected_ids_identical', 'max_accuracy_diff'},
    'torch_reference': {'measured', 'pool_scoring_speedup', 'round_speedup',
                        'batched_pool_scoring_speedup', 'batched_round_speedup'},
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


def test_accelerator_check_quick_writes_every_field(tmp_path):
  """The accelerator check's tiny CPU version: the JSON a GPU/TPU run would write, every field."""
  env = dict(os.environ)
  env['XLA_FLAGS'] = ' '.join(f for f in env.get('XLA_FLAGS', '').split()
                              if not f.startswith('--xla_force_host_platform_device_count'))
  proc = subprocess.run([sys.executable, os.path.join(REPO, 'benchmarks', 'accelerator_check.py'),
                         '--quick', '--out', str(tmp_path)], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  assert 'paper protocol projected on this device' in proc.stdout
  with open(tmp_path / 'accelerator_check_quick.json') as f:
    result = json.load(f)
  assert result['benchmark'] == 'accelerator_check' and result['quick'] is True
  assert {'kind', 'platform', 'peak_bf16_tflops', 'peak_source'} <= set(result['device'])
  assert result['device']['peak_bf16_tflops'] is None  # a CPU has no entry in the peak table
  model = result['model']
  assert model['train_flops_per_image'] == 3 * model['forward_flops_per_image'] > 0
  assert model['xla_flops_per_image']['forward'] > 0
  cases = result['throughput']
  assert [c['dtype'] for c in cases] == ['bfloat16', 'float32']
  for c in cases:
    assert c['status'] == 'measured' and c['train_images_per_s'] > 0 and c['pool_images_per_s'] > 0
    assert {'train_mfu', 'pool_mfu', 'batch', 'setup_and_compile_s'} <= set(c)
  r = result['round']
  assert r['compilations_in_timed_round'] == 0
  assert r['seconds_per_epoch']['train'] > 0 and r['seconds_per_epoch']['record'] >= 0
  assert {'round_wall_s', 'first_round_s', 'rest_per_round_s', 'train_mfu', 'record_mfu',
          'same_selection_as_warmup_round'} <= set(r)
  proj = result['protocol_projection']
  assert proj['labeled_sizes'] == [5000, 7500, 10000, 12500, 15000, 17500]
  assert proj['epochs_per_round'] == 100 and proj['total_s'] > 0
  assert {'device_kind', 'train_images_per_s', 'pool_images_per_s', 'train_mfu', 'pool_mfu',
          'round_seconds_per_epoch_train', 'round_seconds_per_epoch_record',
          'protocol_hours'} <= set(result['headline'])


def test_resnet18_flop_count_matches_the_published_figure():
  """0.555 G multiply-adds for the CIFAR ResNet18 (width 64, 32x32), i.e. 1.11 GFLOP forward."""
  sys.path.insert(0, os.path.join(REPO, 'benchmarks'))
  try:
    import accelerator_check  # pylint: disable=g-import-not-at-top
  finally:
    sys.path.pop(0)
  flops = accelerator_check.resnet18_forward_flops(64, 32, 10)
  assert abs(flops / 2 - 0.5559e9) / 0.5559e9 < 0.01
  assert accelerator_check.peak_tflops('NVIDIA H100 80GB HBM3') == 989.0
  assert accelerator_check.peak_tflops('NVIDIA H100 PCIe') == 756.0
  assert accelerator_check.peak_tflops('TPU v5 lite') == 197.0
  assert accelerator_check.peak_tflops('TPU v4') == 275.0
  assert accelerator_check.peak_tflops('cpu') is None


@pytest.mark.extended  # ~40 s; its run_one is exercised by the features_round test below
def test_demo_strategies_quick_times_each_strategy_against_random(tmp_path):
  """``benchmarks/demo_strategies.py``: the real demo command per strategy in its own process,
  random first and last, the ratio to their mean (no timing asserted)."""
  proc = subprocess.run([sys.executable, os.path.join(REPO, 'benchmarks', 'demo_strategies.py'),
                         '--quick', '--strategies', 'vaal', '--out', str(tmp_path)], cwd=REPO,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  with open(tmp_path / 'demo_strategies_quick.json') as f:
    result = json.load(f)
  assert [r['strategy'] for r in result['runs']] == ['random', 'vaal', 'random']
  (vaal,) = [r for r in result['runs'] if r['strategy'] == 'vaal']
  assert vaal['ratio_to_random'] == vaal['wall_s'] / (sum(result['random_wall_s']) / 2)
  assert vaal['rounds'] == 2 and vaal['score_s'] > 0
  assert set(vaal['demo_settings']) <= {k for k in vaal['demo_settings'] if k.startswith('vaal.')}
  assert {'max_ratio_to_random', 'slowest_strategy', 'all_within_goal'} <= set(result['headline'])
  assert 'x random' in proc.stdout


def test_features_round_quick_runs_the_features_config_end_to_end(tmp_path):
  """``benchmarks/features_round.py --quick``: ``python -m jaxdisp.main --config
  configs/cifar10_features.py`` on a small embeddings ``.npz`` (the protocol's sizes cut down),
  its phase seconds read from the run's results (no timing asserted)."""
  proc = subprocess.run([sys.executable, os.path.join(REPO, 'benchmarks', 'features_round.py'),
                         '--quick', '--out', str(tmp_path)], cwd=REPO, capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  with open(tmp_path / 'features_round_quick.json') as f:
    result = json.load(f)
  assert [r['strategy'] for r in result['runs']] == ['dispersion', 'random']
  for r in result['runs']:
    assert r['rounds'] == 3 and r['train_s'] > 0 and r['final_accuracy'] > 0.5, r
  assert result['headline']['slowest_wall_s'] == max(r['wall_s'] for r in result['runs'])


def test_linear_probe_quick_separates_the_synthetic_classes(tmp_path):
  """``benchmarks/linear_probe.py --quick``: a tiny synthetic embeddings file projected on 8
  principal axes; the JSON has the accuracy and the chosen lambda."""
  sys.path.insert(0, os.path.join(REPO, 'benchmarks'))
  try:
    import linear_probe  # pylint: disable=g-import-not-at-top
  finally:
    sys.path.pop(0)
  assert linear_probe.main(['--quick', '--out', str(tmp_path), '--lambdas', '1e-2',
                            '--max_iters', '20', '--pca_dims', '8']) == 0
  with open(tmp_path / 'linear_probe_quick.json') as f:
    result = json.load(f)
  assert [(r['dim'], r['pca']) for r in result['runs']] == [(8, True)]
  assert all(r['lambda'] == 1e-2 and r['test_accuracy'] > 0.5 for r in result['runs'])
  assert {'test_accuracy', 'dim', 'by_dim', 'paper_accuracy'} <= set(result['headline'])
