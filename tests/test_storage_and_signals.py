"""Refused writes and stop signals: one line each, nothing lost, the rerun resumes.

A checkpoint write the disk refuses (ENOSPC, EFBIG) is injected into a real run through a
``sitecustomize`` that wraps orbax's ``CheckpointManager.save`` (no hook in jaxdisp itself).
Stops are sent to a run whose strategy sleeps at scoring time, where no epoch ends: the
watchdog answers SIGTERM within the grace time, and a second Ctrl-C exits at once.
"""

import errno
import os
import signal
import textwrap
import time

import pytest

from _helpers import REPO, TINY, Running, cli, load_results, strategy_config
from test_reliability import same_results

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
    pytest.param(3, errno.EFBIG, 'file too large', 'checkpoints/rounds/',  # round 0's checkpoint
                 marks=pytest.mark.extended),
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


_SLEEPY = """
def score(view):
  print('scoring: sleeping', file=sys.stderr, flush=True)
  time.sleep(300)
  return view.outputs['probs'][:, 0]


strategies.register(strategies.Strategy(
    name='sleepy', summary='sleeps at scoring time', outputs=('probs',), score=score))
"""


def _tiny(workdir, *overrides):
  return ['--workdir', str(workdir)] + [f'--config.{k}={v}' for k, v in TINY.items()] + list(
      overrides)


def _sleeping(tmp_path, grace: float) -> Running:
  """A run whose strategy sleeps at scoring time (no epoch ends there), once it sleeps."""
  config = strategy_config(tmp_path / 'sleepy.py', 'sleepy', _SLEEPY)
  run = Running(['--config', config] + _tiny(tmp_path / 'run'),
                env={'JAXDISP_STOP_GRACE_SECONDS': str(grace)})
  run.wait_for('scoring: sleeping')
  return run


def test_sigterm_where_no_epoch_ends_is_answered_within_the_grace_time(tmp_path):
  run = _sleeping(tmp_path, grace=3)
  code, waited = run.finish(signal.SIGTERM)
  assert code == 128 + signal.SIGTERM, run.text[-3000:]
  assert waited < 3 + 10, waited  # the grace time, plus the exit (30 s at the most in all)
  assert 'Traceback' not in run.text
  assert run.last_line.startswith('stopped by SIGTERM: no safe point within 3 s'), run.last_line
  # the round-0 training checkpoint stays: the rerun resumes it, it does not start over
  assert os.listdir(tmp_path / 'run' / 'checkpoints' / 'train')


def test_a_second_ctrl_c_exits_at_once_without_a_traceback(tmp_path):
  run = _sleeping(tmp_path, grace=120)
  run.proc.send_signal(signal.SIGINT)
  time.sleep(1.0)
  code, waited = run.finish(signal.SIGINT)
  assert code == 130, run.text[-3000:]
  assert waited < 10, waited
  assert 'Traceback' not in run.text and 'KeyboardInterrupt' not in run.text, run.text[-3000:]
  assert run.last_line.startswith('stopped: second Ctrl-C: exiting at once'), run.last_line


def test_sigterm_during_vaals_training_is_honoured_between_iterations(tmp_path):
  """VAAL trains its VAE and discriminator at scoring time, with no checkpoint of its own: a
  stop there ends the run at the next iteration (not after the round, not by the watchdog)."""
  run = Running(['--config', os.path.join(REPO, 'configs/demo.py')] + _tiny(
      tmp_path / 'run', '--config.strategy=vaal', '--config.vaal.width=4',
      '--config.vaal.batch_size=16', '--config.vaal.epochs=500',  # ~19,000 iterations
      '--config.log.progress_seconds=1'), env={'JAXDISP_STOP_GRACE_SECONDS': '60'})
  run.wait_for("VAAL's VAE + discriminator training: step")  # its progress line
  code, waited = run.finish(signal.SIGTERM)
  assert code == 128 + signal.SIGTERM, run.text[-3000:]
  assert waited < 30, waited
  assert run.last_line.startswith("stopped: stopped by SIGTERM during VAAL's VAE + "
                                  'discriminator training (step '), run.last_line
  assert 'nothing of it is checkpointed' in run.last_line and 'Traceback' not in run.text
