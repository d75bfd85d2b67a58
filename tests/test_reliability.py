"""Crashes and stops: SIGKILL at five places and SIGTERM, each resumed to the uninterrupted result.

Four of the kills are injected in turn into one run (``JAXDISP_FAULT_KILL_AT``), each restart
resuming the previous one; one comes from outside, mid-epoch. Checkpoints in a folder of their
own (``checkpoint.dir``, what launch.sh uses on Cloud TPU) are covered by the SIGTERM test.
"""

import glob
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from _helpers import REPO, TINY, cli, load_results


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


def test_sigkill_at_four_points_in_a_row_then_resume_gives_the_uninterrupted_result(
    straight, tmp_path):
  """One run killed (SIGKILL) at four places in turn, each restart resuming the previous one."""
  def killed_at(point):
    proc = cli(tmp_path, env={'JAXDISP_FAULT_KILL_AT': point}, check=False)
    assert proc.returncode == -signal.SIGKILL, (point, proc.stderr[-2000:])
    return proc

  killed_at('round@0')  # between rounds: round 0 checkpointed, its outputs not yet written
  assert not os.path.exists(tmp_path / 'results.json')
  # Mid-round, one epoch after the last checkpoint (epoch 3's work is lost). The restart first
  # rewrote round 0's outputs from its checkpoint.
  killed_at('epoch@1:3')
  assert len(load_results(tmp_path)['rounds']) == 1
  proc = killed_at('train_save@1:4')  # while the epoch-4 checkpoint is being written
  assert 'round 1: resuming training at epoch 2' in proc.stderr
  assert tmp_checkpoints(tmp_path)  # the kill did land inside the checkpoint write
  before = (tmp_path / 'results.json').read_bytes()
  killed_at('results_write')  # inside the atomic replacement of an output file
  assert (tmp_path / 'results.json').read_bytes() == before  # never torn
  resumed = cli(tmp_path)
  assert 'round 1: resuming training at epoch 2' in resumed.stderr  # the torn save was ignored
  same_results(straight, load_results(tmp_path))
  assert not glob.glob(str(tmp_path / '.results.json.*'))  # no stray temporaries in use


def run_until(workdir, marker, signum, *overrides, delay=0.0):
  """Starts a run, sends ``signum`` once ``marker`` appears in its log; returns (code, log)."""
  args = [sys.executable, '-m', 'jaxdisp.main', '--config', os.path.join(REPO, 'configs/demo.py'),
          '--workdir', str(workdir)] + [f'--config.{k}={v}' for k, v in TINY.items()]
  args += list(overrides)
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


def test_sigterm_checkpoints_exits_nonzero_and_resumes_from_a_separate_checkpoint_dir(
    straight, tmp_path):
  """SIGTERM (a spot VM going away) with checkpoint.dir elsewhere (launch.sh points it at
  gs://.../checkpoints): the run checkpoints and exits 143, and a fresh workdir (a new VM's disk)
  resumes mid-round from that folder to the uninterrupted result."""
  ckpt = tmp_path / 'bucket' / 'checkpoints'
  code, log = run_until(tmp_path / 'vm1', 'round 1/2 epoch 1/6', signal.SIGTERM,
                        f'--config.checkpoint.dir={ckpt}')
  assert code == 128 + signal.SIGTERM, log[-2000:]
  last = log.strip().splitlines()[-1]
  assert last.startswith('stopped: stopped by SIGTERM in round 1 after epoch'), last
  assert 'rerun the same command to resume' in last
  assert any(s.isdigit() for s in os.listdir(ckpt / 'train'))  # written on the way out
  assert not os.path.exists(tmp_path / 'vm1' / 'checkpoints')
  resumed = cli(tmp_path / 'vm2', f'--config.checkpoint.dir={ckpt}')
  assert 'round 1: resuming training at epoch' in resumed.stderr
  got = load_results(tmp_path / 'vm2')
  assert [r['selected'] for r in got['rounds']] == [r['selected'] for r in straight['rounds']]
  assert ([r['test_accuracy'] for r in got['rounds']]
          == [r['test_accuracy'] for r in straight['rounds']])
