"""Refused writes and stop signals: one line each, nothing lost, the rerun resumes.

A checkpoint write the disk refuses (ENOSPC, EFBIG) is injected into a real run through a
``sitecustomize`` that wraps orbax's ``CheckpointManager.save`` (no hook in jaxdisp itself).
Stops are sent to a run whose strategy sleeps at scoring time, where no epoch ends: the
watchdog answers SIGTERM within the grace time, and a second Ctrl-C exits at once.
"""

import errno
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from _helpers import REPO, TINY, cli, load_results
from test_reliability import same_results, straight, straight_workdir  # pylint: disable=unused-import

_FAIL_SAVE = textwrap.dedent('''\
    import os
    import orbax.checkpoint as ocp
    _at, _code = int(os.environ['FAIL_SAVE_AT']), int(os.environ['FAIL_ERRNO'])
    _original, _calls = ocp.CheckpointManager.save, [0]

    def _save(self, step, *args, **kwargs):
      _calls[0] += 1
      if _calls[0] == _at:
        raise OSError(_code, os.strerror(_code), str(self.directory / str(step)))
      return _original(self, step, *args, **kwargs)

    ocp.CheckpointManager.save = _save
    ''')


@pytest.mark.parametrize('at, code, why, where', [
    (4, errno.ENOSPC, 'no space left on the device', 'checkpoints/train/'),  # round 1, epoch 2
    (3, errno.EFBIG, 'file too large', 'checkpoints/rounds/'),  # the round-0 checkpoint
])
def test_a_refused_checkpoint_write_is_one_line_and_the_rerun_resumes(
    at, code, why, where, straight, tmp_path):
  shim = tmp_path / 'shim'
  shim.mkdir()
  (shim / 'sitecustomize.py').write_text(_FAIL_SAVE)
  workdir = tmp_path / 'run'
  proc = cli(workdir, check=False, env={'PYTHONPATH': str(shim), 'FAIL_SAVE_AT': str(at),
                                        'FAIL_ERRNO': str(code)})
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith('error: cannot write the checkpoint '), last
  assert why in last and where in last and str(workdir) in last, last
  cli(workdir)  # room again: the rerun resumes from the last complete checkpoint
  same_results(straight, load_results(workdir))


_SLEEPY = textwrap.dedent('''\
    import importlib.util
    import sys
    import time

    from jaxdisp import strategies

    def score(view):
      print('scoring: sleeping', file=sys.stderr, flush=True)
      time.sleep(300)
      return view.outputs['probs'][:, 0]

    strategies.register(strategies.Strategy(
        name='sleepy', summary='sleeps at scoring time', outputs=('probs',), score=score))

    def get_config():
      spec = importlib.util.spec_from_file_location('demo_for_sleepy', {demo!r})
      demo = importlib.util.module_from_spec(spec)
      spec.loader.exec_module(demo)
      config = demo.get_config()
      config.strategy = 'sleepy'
      return config
    ''')


def _start_sleepy(tmp_path, grace: float):
  config = tmp_path / 'sleepy.py'
  config.write_text(_SLEEPY.format(demo=os.path.join(REPO, 'configs', 'demo.py')))
  args = [sys.executable, '-m', 'jaxdisp.main', '--config', str(config),
          '--workdir', str(tmp_path / 'run')] + [f'--config.{k}={v}' for k, v in TINY.items()]
  proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env={**os.environ, 'JAXDISP_STOP_GRACE_SECONDS': str(grace)})
  log, sleeping = [], threading.Event()

  def read():
    for line in proc.stderr:
      log.append(line)
      if 'scoring: sleeping' in line:
        sleeping.set()
  reader = threading.Thread(target=read, daemon=True)
  reader.start()
  assert sleeping.wait(300), ''.join(log)[-3000:]
  return proc, log, reader


def test_sigterm_where_no_epoch_ends_is_answered_within_the_grace_time(tmp_path):
  proc, log, reader = _start_sleepy(tmp_path, grace=3)
  start = time.monotonic()
  proc.send_signal(signal.SIGTERM)
  code = proc.wait(60)
  waited = time.monotonic() - start
  reader.join(10)
  text = ''.join(log)
  assert code == 128 + signal.SIGTERM, text[-3000:]
  assert waited < 3 + 10, waited  # the grace time, plus the exit (30 s at the most in all)
  assert 'Traceback' not in text
  assert text.strip().splitlines()[-1].startswith('stopped by SIGTERM: no safe point within 3 s')
  # the round-0 training checkpoint stays: the rerun resumes it, it does not start over
  assert os.listdir(tmp_path / 'run' / 'checkpoints' / 'train')


def test_a_second_ctrl_c_exits_at_once_without_a_traceback(tmp_path):
  proc, log, reader = _start_sleepy(tmp_path, grace=120)
  proc.send_signal(signal.SIGINT)
  time.sleep(1.0)
  start = time.monotonic()
  proc.send_signal(signal.SIGINT)
  code = proc.wait(60)
  waited = time.monotonic() - start
  reader.join(10)
  text = ''.join(log)
  assert code == 130, text[-3000:]
  assert waited < 10, waited
  assert 'Traceback' not in text and 'KeyboardInterrupt' not in text, text[-3000:]
  assert text.strip().splitlines()[-1].startswith('stopped: second Ctrl-C: exiting at once')


def test_sigterm_during_vaals_training_is_honoured_between_iterations(tmp_path):
  """VAAL trains its VAE and discriminator at scoring time, with no checkpoint of its own: a
  stop there ends the run at the next iteration (not after the round, not by the watchdog)."""
  args = [sys.executable, '-m', 'jaxdisp.main', '--config', os.path.join(REPO, 'configs/demo.py'),
          '--workdir', str(tmp_path / 'run')] + [f'--config.{k}={v}' for k, v in TINY.items()]
  args += ['--config.strategy=vaal', '--config.vaal.width=4', '--config.vaal.batch_size=16',
           '--config.vaal.epochs=500', '--config.log.progress_seconds=1']  # ~19,000 iterations
  proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env={**os.environ, 'JAXDISP_STOP_GRACE_SECONDS': '60'})
  log, training = [], threading.Event()

  def read():
    for line in proc.stderr:
      log.append(line)
      if "VAAL's VAE + discriminator training: step" in line:
        training.set()
  reader = threading.Thread(target=read, daemon=True)
  reader.start()
  assert training.wait(300), ''.join(log)[-3000:]  # a progress line of the auxiliary training
  start = time.monotonic()
  proc.send_signal(signal.SIGTERM)
  code = proc.wait(60)
  waited = time.monotonic() - start
  reader.join(10)
  text = ''.join(log)
  assert code == 128 + signal.SIGTERM, text[-3000:]
  assert waited < 30, waited
  last = text.strip().splitlines()[-1]
  assert last.startswith("stopped: stopped by SIGTERM during VAAL's VAE + discriminator "
                         'training (step '), last
  assert 'nothing of it is checkpointed' in last and 'Traceback' not in text
