"""Two processes x 2 CPU devices (jax.distributed, gloo) select exactly what 1 process x 4 does.

The one process holds the training images replicated; the two processes (``dataset.placement=
auto``) split them, each loading only its own devices' rows: the selections must still agree.
"""

import os
import socket
import subprocess
import sys

from _helpers import REPO, TINY, load_results, tiny_config
from jaxdisp.experiment import run as run_experiment


def free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def test_two_processes_select_the_same_ids_as_one(tmp_path):
  run_experiment(tiny_config(), str(tmp_path / 'one'))  # this process: 4 simulated devices
  port = free_port()
  env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=2',
         'JAX_PLATFORMS': 'cpu'}
  args = [sys.executable, '-m', 'jaxdisp.main', '--config', os.path.join(REPO, 'configs/demo.py'),
          '--workdir', str(tmp_path / 'two'), f'--coordinator_address=localhost:{port}',
          '--num_processes=2'] + [f'--config.{k}={v}' for k, v in TINY.items()]
  procs = [subprocess.Popen(args + [f'--process_id={i}'], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(2)]
  try:  # ~1 min when healthy; a collective that only one process enters hangs both
    outs = [p.communicate(timeout=300) for p in procs]
  finally:
    for p in procs:
      p.kill()
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  assert '4 cpu device(s)' in outs[0][1]  # one global mesh over both processes
  # dataset.placement=auto shards the training images over the processes: each loads its half.
  assert 'process 0 holds training images [0, 150), [150, 300) of 600' in outs[0][1]
  assert 'process 1 holds training images [300, 450), [450, 600) of 600' in outs[1][1]
  one, two = load_results(tmp_path / 'one'), load_results(tmp_path / 'two')
  assert len(one['rounds']) == len(two['rounds']) == TINY['al.rounds'] + 1
  for a, b in zip(one['rounds'], two['rounds']):
    assert a['selected'] == b['selected']
    assert a['test_accuracy'] == b['test_accuracy']
  # Process 1 wrote no outputs of its own: one results.json, one TensorBoard event file.
  assert len(os.listdir(tmp_path / 'two' / 'tensorboard')) == 1
  # The pool diagnostics gather over both processes (every process joins) and process 0 writes.
  assert sorted(os.listdir(tmp_path / 'two' / 'diagnostics')) == sorted(
      os.listdir(tmp_path / 'one' / 'diagnostics'))
