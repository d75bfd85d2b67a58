"""Refused writes and stop signals: one line each, nothing lost, the rerun resumes.

A checkpoint write the disk refuses (ENOSPC, EFBIG) is injected into a real run through a
``sitecustomize`` that wraps orbax's ``CheckpointManager.save`` (no hook in jaxdisp itself).
Stops are sent to a run whose strategy sleeps at scoring time, where no epoch ends: the
watchdog answers SIGTERM within the grace time, and a second Ctrl-C exits at once.
"""

import errno
import glob
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from jaxdisp import files
from _helpers import REPO, TINY, Running, cli, load_results, strategy_config
from test_reliability import same_results

# The fault injector, a sitecustomize put on PYTHONPATH (no hook in jaxdisp itself), set by
# environment variables: FAIL_SAVE_AT=n makes orbax's n-th CheckpointManager.save raise
# FAIL_ERRNO; FAIL_WRITE=regex makes the FAIL_WRITE_AT-th (default 1st) fsync of a file whose
# path matches raise FAIL_ERRNO (its bytes were written: a disk full at flush time); READONLY=dir
# refuses every write, creation, rename and removal under dir with READONLY_ERRNO (as a
# read-only mount would, for root as well).
SHIM = textwrap.dedent('''\
    import builtins, os, re
    _env = os.environ
    if 'FAIL_SAVE_AT' in _env:
      import orbax.checkpoint as ocp
      _at, _code = int(_env['FAIL_SAVE_AT']), int(_env['FAIL_ERRNO'])
      _original, _calls = ocp.CheckpointManager.save, [0]

      def _save(self, step, *args, **kwargs):
        _calls[0] += 1
        if _calls[0] == _at:
          raise OSError(_code, os.strerror(_code), str(self.directory / str(step)))
        return _original(self, step, *args, **kwargs)

      ocp.CheckpointManager.save = _save
    if 'FAIL_WRITE' in _env:
      _pattern, _code = re.compile(_env['FAIL_WRITE']), int(_env['FAIL_ERRNO'])
      _nth, _seen, _fsync = int(_env.get('FAIL_WRITE_AT', '1')), [0], os.fsync

      def _failing_fsync(fd):
        try:
          name = os.readlink(f'/proc/self/fd/{fd}')
        except OSError:
          name = ''
        if _pattern.search(name):
          _seen[0] += 1
          if _seen[0] == _nth:
            raise OSError(_code, os.strerror(_code))
        return _fsync(fd)

      os.fsync = _failing_fsync
    if 'READONLY' in _env:
      _root, _code = os.path.abspath(_env['READONLY']), int(_env['READONLY_ERRNO'])
      _WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

      def _inside(path):
        try:
          path = os.path.abspath(os.fsdecode(path))
        except TypeError:  # a file descriptor
          return False
        return path == _root or path.startswith(_root + os.sep)

      def _refuse(path):
        raise OSError(_code, os.strerror(_code), os.fsdecode(path))

      def _guard(original, writes=lambda *a, **k: True):
        def guarded(path, *args, **kwargs):
          if _inside(path) and writes(*args, **kwargs):
            _refuse(path)
          return original(path, *args, **kwargs)
        return guarded

      _mode = lambda mode='r', *a, **k: any(c in k.get('mode', mode) for c in 'wax+')
      builtins.open = _guard(builtins.open, _mode)
      import io
      io.open = builtins.open
      os.open = _guard(os.open, lambda flags, *a, **k: flags & _WRITE)
      for _name in ('mkdir', 'unlink', 'remove', 'rmdir', 'truncate', 'chmod', 'utime'):
        setattr(os, _name, _guard(getattr(os, _name)))
      for _name in ('replace', 'rename'):
        setattr(os, _name, _guard(getattr(os, _name)))
    ''')


def shim_env(tmp_path, **variables) -> dict:
  """The environment of a subprocess that runs with :data:`SHIM` set by ``variables``."""
  shim = tmp_path / 'shim'
  shim.mkdir(exist_ok=True)
  (shim / 'sitecustomize.py').write_text(SHIM)
  return {'PYTHONPATH': os.pathsep.join([str(shim), REPO]),
          **{k: str(v) for k, v in variables.items()}}


def one_error_line(proc) -> str:
  """The one ``error:`` line of a failed command (and no traceback)."""
  assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
  errors = [l for l in proc.stderr.splitlines() if l.startswith('error:')]
  assert len(errors) == 1, proc.stderr[-3000:]
  return errors[0]


@pytest.mark.parametrize('at, code, why, where', [
    (4, errno.ENOSPC, 'no space left on the device', 'checkpoints/train/'),  # round 1, epoch 2
    pytest.param(3, errno.EFBIG, 'file too large', 'checkpoints/rounds/',  # round 0's checkpoint
                 marks=pytest.mark.extended),
])
def test_a_refused_checkpoint_write_is_one_line_and_the_rerun_resumes(
    at, code, why, where, straight, tmp_path):
  workdir = tmp_path / 'run'
  proc = cli(workdir, check=False, env=shim_env(tmp_path, FAIL_SAVE_AT=at, FAIL_ERRNO=code))
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith('error: cannot write the checkpoint '), last
  assert why in last and where in last and str(workdir) in last, last
  cli(workdir)  # room again: the rerun resumes from the last complete checkpoint
  same_results(straight, load_results(workdir))


@pytest.mark.parametrize('pattern, at, code, why, name', [
    # results.json after round 1 (its round checkpoint is saved: the rerun writes the outputs)
    (r'/\.results\.json\.', 2, errno.ENOSPC, 'no space left on the device', 'results.json'),
    # round 1's pool diagnostics (inside the round: the rerun scores and selects it again)
    pytest.param(r'/diagnostics/\.round_1\.npz\.', 1, errno.EFBIG, 'file too large',
                 os.path.join('diagnostics', 'round_1.npz'), marks=pytest.mark.extended),
])
def test_a_refused_output_write_is_one_line_and_the_rerun_completes(
    pattern, at, code, why, name, straight, tmp_path):
  workdir = tmp_path / 'run'
  proc = cli(workdir, check=False,
             env=shim_env(tmp_path, FAIL_WRITE=pattern, FAIL_WRITE_AT=at, FAIL_ERRNO=code))
  assert proc.returncode == 2, proc.stderr[-3000:]
  line = one_error_line(proc)
  assert line.startswith(f'error: cannot write {workdir / name}: {why}'), line
  assert line.endswith('make room (or lift the limit), then rerun the same command'), line
  assert not glob.glob(str(workdir / '**' / ('*' + files.TMP_SUFFIX)), recursive=True)
  cli(workdir)  # room again: the rerun completes
  same_results(straight, load_results(workdir))


def _snapshot(folder) -> dict:
  """{path: (size, mtime_ns)} of every file under ``folder``."""
  out = {}
  for base, _, names in os.walk(folder):
    for n in names:
      st = os.stat(os.path.join(base, n))
      out[os.path.join(base, n)] = (st.st_size, st.st_mtime_ns)
  return out


@pytest.mark.parametrize('how', ['EROFS', 'EACCES', 'chmod'])
def test_a_read_only_finished_run_reruns_and_reports_or_names_the_path(
    how, straight_workdir, tmp_path):
  """A finished run's rerun needs no write (it says it is done); the report and the label
  export, which must write, say which path they cannot write, in one line."""
  sweep = tmp_path / 'sweep'
  workdir = sweep / 'dispersion-seed0'
  shutil.copytree(straight_workdir, workdir)
  if how == 'chmod':
    if os.geteuid() == 0:
      pytest.skip('root writes through chmod a-w; the EROFS/EACCES cases inject the refusal')
    env = {}
    subprocess.run(['chmod', '-R', 'a-w', str(sweep)], check=True)
  else:
    env = shim_env(tmp_path, READONLY=sweep, READONLY_ERRNO=getattr(errno, how))
  why = 'read-only file system' if how == 'EROFS' else 'permission denied'
  before = _snapshot(sweep)
  try:
    proc = cli(workdir, env=env)
    assert 'Traceback' not in proc.stderr and 'error:' not in proc.stderr, proc.stderr[-3000:]
    assert proc.stdout.splitlines()[:2] == [
        f'{workdir}: the run is already finished (3 rounds); nothing to do',
        'round  labeled  test_acc  balanced  train_s  score_s'], proc.stdout
    report = subprocess.run([sys.executable, '-m', 'jaxdisp.report', str(sweep)], cwd=REPO,
                            capture_output=True, text=True, env={**os.environ, **env})
    assert report.returncode == 2, report.stderr[-3000:]
    assert one_error_line(report) == (
        f'error: cannot write {sweep / "report"}: {why}; make it writable (or use another '
        'folder), then rerun the same command')
    export = subprocess.run([sys.executable, '-m', 'jaxdisp.label', 'export', '--workdir',
                             str(workdir)], cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, **env})
    assert export.returncode == 2, export.stderr[-3000:]
    assert one_error_line(export).startswith(
        f'error: cannot write {workdir / "labels_export.csv"}: {why}; '), export.stderr
    assert _snapshot(sweep) == before  # nothing written, nothing removed
  finally:
    if how == 'chmod':
      subprocess.run(['chmod', '-R', 'u+w', str(sweep)], check=True)


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
