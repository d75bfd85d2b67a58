"""Edges of the command lines found by a fault probe: a workdir path that is not UTF-8,
out-of-range seeds, a tuple key given a string element, ``report --out`` naming a file. Each is
one ``error:`` line naming the path or value, exit status 2, no traceback, nothing written."""

import os
import subprocess
import sys

import pytest

from _helpers import REPO, TINY

DEMO = os.path.join(REPO, 'configs', 'demo.py')
_TINY = [f'--config.{k}={v}' for k, v in TINY.items()]


def run(module, *args):
  """``python -m module args`` (str or bytes arguments): (exit status, its one error line)."""
  command = [os.fsencode(sys.executable), b'-m', module.encode()] + [
      a if isinstance(a, bytes) else os.fsencode(a) for a in args]
  proc = subprocess.run(command, cwd=REPO, capture_output=True, timeout=300)
  err = proc.stderr.decode('utf-8', 'backslashreplace')
  assert 'Traceback' not in err, err[-3000:]
  errors = [l for l in err.splitlines() if l.startswith('error:')]
  assert len(errors) == 1, err[-3000:]
  return proc.returncode, errors[0]


@pytest.mark.parametrize('module, args', [
    ('jaxdisp.main', ['--config', DEMO] + _TINY),
    ('jaxdisp.sweep', ['--config', DEMO, '--strategies', 'random', '--seeds', '0'] + _TINY),
    ('jaxdisp.label', ['export']),
])
def test_a_workdir_path_that_is_not_utf8_is_refused_before_any_work(module, args, tmp_path):
  workdir = os.fsencode(tmp_path) + b'/run\xffdir'
  code, line = run(module, *args, '--workdir', workdir)
  assert code == 2
  assert line == (f'error: the --workdir path {tmp_path}/run\\xffdir is not valid UTF-8 (byte '
                  '0xff); jaxdisp writes its files (checkpoints through tensorstore) only to '
                  'UTF-8 paths: rename the folder or use another --workdir'), line
  assert os.listdir(tmp_path) == []  # not even the folder


_SEED = ("seed={} must be in [0, 4294967295] (the random key keeps 32 bits of it: a negative or "
         "larger seed would repeat another seed's run)")


@pytest.mark.parametrize('module, args, message', [
    ('jaxdisp.main', ['--config.seed=99999999999999999999'], _SEED.format('99999999999999999999')),
    ('jaxdisp.main', ['--config.seed=-1', '--config.oracle.noise=0.2'], _SEED.format(-1)),
    ('jaxdisp.main', ['--config.seed=4294967296'], _SEED.format(4294967296)),  # = seed 0's key
    ('jaxdisp.sweep', ['--strategies', 'random', '--seeds=-1', '--set', 'oracle.noise=0.2'],
     'random-seed-1: ' + _SEED.format(-1)),
    ('jaxdisp.sweep', ['--strategies', 'random', '--seeds', '99999999999999999999'],
     'random-seed99999999999999999999: ' + _SEED.format('99999999999999999999')),
    ('jaxdisp.sweep', ['--strategies', 'random', '--seeds', '0', '--set',
                       "train.lr_milestones=('a',1)"],
     "--config.train.lr_milestones=('a',1): expected a tuple, e.g. (0.6,0.8) (elements: float "
     "or int; got 'a')"),
])
def test_out_of_range_seeds_and_string_tuple_elements_are_one_line(module, args, message,
                                                                   tmp_path):
  code, line = run(module, '--config', DEMO, '--workdir', str(tmp_path / 'w'), *args)
  assert (code, line) == (2, 'error: ' + message)
  assert not os.path.exists(tmp_path / 'w')


def test_a_config_file_with_a_string_in_a_tuple_key_is_one_line(tmp_path):
  """The override parser checks a tuple's elements; a config file's own values are checked by
  config_checks.validate, for jaxdisp.main and jaxdisp.sweep alike."""
  config = tmp_path / 'bad.py'
  config.write_text('from jaxdisp import cli\n\n\ndef get_config():\n'
                    f'  c = cli.load_config({DEMO!r})\n'
                    "  c.train.lr_milestones = ('a', 1)\n  return c\n")
  message = ("train.lr_milestones=('a', 1): its elements must be float or int, got 'a'")
  code, line = run('jaxdisp.main', '--config', str(config), '--workdir', str(tmp_path / 'w'))
  assert (code, line) == (2, 'error: ' + message)
  code, line = run('jaxdisp.sweep', '--config', str(config), '--workdir', str(tmp_path / 's'),
                   '--strategies', 'random', '--seeds', '0')
  assert (code, line) == (2, 'error: random-seed0: ' + message)


def test_report_out_that_is_a_file_is_one_line(tmp_path):
  sweep_dir = tmp_path / 'sweep'
  (sweep_dir / 'random-seed0').mkdir(parents=True)  # checked before any run is read
  out = tmp_path / 'notes.txt'
  out.write_text('keep me\n')
  code, line = run('jaxdisp.report', str(sweep_dir), '--out', str(out))
  assert (code, line) == (2, f'error: --out {out} exists and is not a folder: name a folder for '
                          'report.md and its figures (it is made if missing)')
  assert out.read_text() == 'keep me\n'
