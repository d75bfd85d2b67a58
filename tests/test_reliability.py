"""Crashes and stops: SIGKILL at five places and SIGTERM, each resumed to the uninterrupted result."""

import glob
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from test_experiment import REPO, TINY, cli, load_results


@pytest.fixture(scope='module')
def straight(tmp_path_factory):
  """The uninterrupted reference run."""
  workdir = tmp_path_factory.mktemp('straight')
  cli(workdir)
  return load_results(workdir)


def same_results(a, b):
  assert len(a['rounds']) == len(b['rounds']) == TINY['al.rounds'] + 1
  for ra, rb in zip(a['rounds'], b['rounds']):
    assert ra['selected'] == rb['selected'], ra['round']
    assert ra['test_accuracy'] == rb['test_accuracy'], ra['round']
  assert a['config'] == b['config']


def tmp_checkpoints(workdir):
  return glob.glob(os.path.join(workdir, 'checkpoints', '*', '*tmp*'))


@pytest.mark.parametrize('point', [
    'epoch@1:3',  # mid-round, one epoch after the last checkpoint (epoch 3's work is lost)
    'train_save@1:4',  # while the epoch-4 checkpoint is being written
    'round@0',  # between rounds: round 0 checkpointed, its outputs not yet written
    'results_write',  # inside the atomic write of the first output file
])
def test_sigkill_then_rerun_gives_the_uninterrupted_result(point, straight, tmp_path):
  proc = cli(tmp_path, env={'JAXDISP_FAULT_KILL_AT': point}, check=False)
  assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
  tmp_leftovers = tmp_checkpoints(tmp_path)
  if point == 'results_write':  # the file being replaced is never torn
    assert not os.path.exists(tmp_path / 'results.json')
  resumed = cli(tmp_path)
  if point == 'epoch@1:3':
    assert 'round 1: resuming training at epoch 2' in resumed.stderr
  if point == 'train_save@1:4':
    assert tmp_leftovers  # the kill did land inside the checkpoint write
  same_results(straight, load_results(tmp_path))
  assert not glob.glob(str(tmp_path / '.results.json.*'))  # no stray temporaries in use


def run_until(workdir, marker, signum, delay=0.0):
  """Starts a run, sends ``signum`` once ``marker`` appears in its log; returns (code, log)."""
  args = [sys.executable, '-m', 'jaxdisp.main', '--config', os.path.join(REPO, 'configs/demo.py'),
          '--workdir', str(workdir)] + [f'--config.{k}={v}' for k, v in TINY.items()]
  proc = subprocess.Popen(args, cwd=REPO, stderr=subprocess.PIPE, stdout=subprocess.PIPE,
                          text=True)
  log, seen = [], threading.Event()

  def read():
    for line in proc.stderr:
      log.append(line)
      if marker in line:
        seen.set()
  reader = threading.Thread(target=read, daemon=True)
  reader.start()
  assert seen.wait(300), ''.join(log)[-2000:]
  time.sleep(delay)
  proc.send_signal(signum)
  code = proc.wait(300)
  reader.join(10)
  return code, ''.join(log)


def test_sigkill_mid_epoch_from_outside(straight, tmp_path):
  code, _ = run_until(tmp_path, 'round 1/2 epoch 3/6', signal.SIGKILL, delay=0.05)
  assert code == -signal.SIGKILL
  cli(tmp_path)
  same_results(straight, load_results(tmp_path))


def test_sigterm_checkpoints_exits_nonzero_and_resumes(straight, tmp_path):
  code, log = run_until(tmp_path, 'round 1/2 epoch 1/6', signal.SIGTERM)
  assert code == 128 + signal.SIGTERM, log[-2000:]
  last = log.strip().splitlines()[-1]
  assert last.startswith('stopped: stopped by SIGTERM in round 1 after epoch'), last
  assert 'rerun the same command to resume' in last
  steps = os.listdir(tmp_path / 'checkpoints' / 'train')
  assert any(s.isdigit() for s in steps)  # the in-round checkpoint written on the way out
  resumed = cli(tmp_path)
  assert 'round 1: resuming training at epoch' in resumed.stderr
  same_results(straight, load_results(tmp_path))


def test_checkpoints_in_their_own_folder_resume_a_killed_run(straight, tmp_path):
  """checkpoint.dir (launch.sh points it at gs://.../checkpoints): a fresh workdir resumes from it."""
  ckpt = tmp_path / 'bucket' / 'checkpoints'
  first = tmp_path / 'vm1'
  proc = cli(first, f'--config.checkpoint.dir={ckpt}', env={'JAXDISP_FAULT_KILL_AT': 'epoch@1:3'},
             check=False)
  assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
  assert not os.path.exists(first / 'checkpoints') and os.listdir(ckpt / 'rounds')
  resumed = cli(tmp_path / 'vm2', f'--config.checkpoint.dir={ckpt}')  # a new machine's disk
  assert 'round 1: resuming training at epoch 2' in resumed.stderr
  got = load_results(tmp_path / 'vm2')
  assert [r['selected'] for r in got['rounds']] == [r['selected'] for r in straight['rounds']]
  assert ([r['test_accuracy'] for r in got['rounds']]
          == [r['test_accuracy'] for r in straight['rounds']])
