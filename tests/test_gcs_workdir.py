"""Workdirs at gs:// paths: jaxdisp.files and a whole run under a mocked filesystem.

``etils.epath.testing.mock_epath`` routes every epath call to functions of the test; here they
map ``gs://BUCKET/PATH`` to ``<tmp>/gcs/BUCKET/PATH``, and the test runs in an empty current
folder, so a file written past epath (``open('gs://...')`` makes ``./gs:/...``) would show up
there instead. orbax writes checkpoints through tensorstore, which the mock cannot reach: the run
is given a Checkpointer that records the directory it is handed and writes to a local folder.
"""

import csv
import io
import os
import stat
import tempfile

import numpy as np
import pytest
from etils import epath
from etils.epath import testing as epath_testing

from _helpers import check_outputs, tiny_config
from jaxdisp import checkpointing, experiment, files, label, locking
from jaxdisp.errors import LockHeld

_PATH_FNS = ('exists', 'glob', 'isdir', 'listdir', 'makedirs', 'mkdir', 'remove', 'rmtree',
             'stat', 'walk')


@pytest.fixture
def gcs(tmp_path, monkeypatch):
  """The fake bucket root; gs:// paths land under it. Locks and the current folder: tmp_path."""
  root = tmp_path / 'gcs'
  root.mkdir()
  cwd = tmp_path / 'cwd'
  cwd.mkdir()
  monkeypatch.chdir(cwd)
  monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path / 'tmp'))  # the gs:// lock files
  (tmp_path / 'tmp').mkdir()
  renamed = []

  def local(p):
    p = os.fspath(p)
    return str(root / p[len('gs://'):]) if p.startswith('gs://') else p

  def one_path(original, p, *args, **kwargs):
    return original(local(p), *args, **kwargs)

  def two_paths(original, p, dst, *args, **kwargs):
    if os.fspath(p).startswith('gs://'):
      renamed.append(os.fspath(p))
    return original(local(p), local(dst), *args, **kwargs)

  with epath_testing.mock_epath(open=one_path, rename=two_paths, replace=two_paths,
                                copy=two_paths, **{fn: one_path for fn in _PATH_FNS}):
    if epath.Path('gs://b/x')._backend is not epath.Path('/x')._backend:  # pylint: disable=protected-access
      pytest.skip('epath uses TensorFlow for gs:// here, which mock_epath does not replace')
    yield {'root': root, 'cwd': cwd, 'renamed': renamed}
  assert not os.listdir(cwd), os.listdir(cwd)  # nothing was written past epath


def modes(folder):
  return {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()}


def test_atomic_write_locally_renames_a_complete_temporary_into_place(tmp_path):
  path = tmp_path / 'sub' / 'results.json'
  files.atomic_write(str(path), 'old')
  seen = []
  files.atomic_write(str(path), b'new', before_replace=lambda: seen.append(
      (path.read_text(), [p.name for p in path.parent.iterdir() if p.name != 'results.json'])))
  assert path.read_text() == 'new'
  (old, (tmp,)), = seen
  assert old == 'old' and tmp.startswith('.results.json.') and tmp.endswith(files.TMP_SUFFIX)
  umask = os.umask(0)
  os.umask(umask)
  assert modes(path.parent) == {'results.json': 0o666 & ~umask}  # no temporary left


def test_atomic_write_on_gcs_is_one_object_write(gcs):
  path = 'gs://bkt/run/results.json'
  files.atomic_write(path, 'old')
  seen = []
  files.atomic_write(path, 'new', before_replace=lambda: seen.append(files.read_text(path)))
  assert seen == ['old'] and files.read_text(path) == 'new'
  assert os.listdir(gcs['root'] / 'bkt' / 'run') == ['results.json'] and gcs['renamed'] == []


@pytest.mark.parametrize('workdir', ['local', 'gs://bkt/run'])
def test_remove_stale_temporaries_cleans_the_folders_of_atomic_writes(gcs, tmp_path, workdir):
  workdir = str(tmp_path / 'w') if workdir == 'local' else workdir
  stale = ['.results.json.abc' + files.TMP_SUFFIX, 'queries/.round_0.csv.x' + files.TMP_SUFFIX,
           'diagnostics/.round_1.npz.y' + files.TMP_SUFFIX]
  kept = ['results.json', 'visible' + files.TMP_SUFFIX, 'queries/round_0.csv',
          'tensorboard/.events.z' + files.TMP_SUFFIX, '.report.md.abc.tmp']
  for name in stale + kept:
    files.atomic_write(os.path.join(workdir, name), 'x')
  files.remove_stale_temporaries(workdir)
  left = {name for name in stale + kept if files.exists(os.path.join(workdir, name))}
  assert left == set(kept)
  files.remove_stale_temporaries(os.path.join(workdir, 'nothing-here'))  # no folder: nothing to do


@pytest.mark.parametrize('workdir', ['local', 'gs://bkt/run'])
def test_append_lines_starts_a_new_line_after_a_torn_one(gcs, tmp_path, workdir):
  path = os.path.join(str(tmp_path) if workdir == 'local' else workdir, 'labels.jsonl')
  files.append_lines(path, '{"id": 1}\n')
  files.append_lines(path, '{"id": 2}\n')
  files.atomic_write(path, files.read_text(path) + '{"id": 3, "tor')  # a crash mid-append
  files.append_lines(path, '{"id": 4}\n')
  assert files.read_text(path) == '{"id": 1}\n{"id": 2}\n{"id": 3, "tor\n{"id": 4}\n'


def test_a_gcs_workdir_is_locked_by_a_local_file_keyed_by_its_path(gcs, tmp_path):
  with locking.workdir_lock('gs://bkt/run') as info:
    assert info['pid'] == os.getpid()
    with pytest.raises(LockHeld, match=r'^workdir gs://bkt//run/ is in use by pid \d+ on '):
      with locking.workdir_lock('gs://bkt//run/'):  # the same workdir, spelled differently
        pass
    with locking.workdir_lock('gs://bkt/other'):  # another workdir is free
      pass
  lock = locking.lock_file('gs://bkt/run/.jaxdisp.lock')
  assert os.path.dirname(lock) == str(tmp_path / 'tmp' / 'jaxdisp-locks')
  assert os.path.exists(lock) and locking.lock_file('gs://bkt//run/.jaxdisp.lock') == lock
  assert not (gcs['root'] / 'bkt').exists()  # nothing in the bucket


def fill_answers(queries_csv: str) -> str:
  """The annotators' answers: the round's query file with every label set to class 0."""
  rows = list(csv.DictReader(io.StringIO(files.read_text(queries_csv))))
  out = io.StringIO()
  w = csv.DictWriter(out, list(rows[0]))
  w.writeheader()
  w.writerows({**r, 'label': '0'} for r in rows)
  answers = queries_csv.replace('round_0.csv', 'answers_0.csv')
  files.atomic_write(answers, out.getvalue())
  return answers


def test_a_run_with_a_gcs_workdir_writes_every_file_there(gcs, tmp_path, monkeypatch, capsys):
  handed, orbax_checkpointer = [], checkpointing.Checkpointer

  def checkpointer(directory, *args, **kwargs):
    handed.append(directory)
    return orbax_checkpointer(str(tmp_path / 'orbax'), *args, **kwargs)

  monkeypatch.setattr(experiment.checkpointing, 'Checkpointer', checkpointer)
  cfg = tiny_config(**{'oracle.kind': 'files', 'al.rounds': 1, 'train.epochs': 2})
  workdir = 'gs://bkt/exp/run'
  experiment.run(cfg, workdir)  # round 0, then it waits for labels
  assert 'waiting for labels: 50 queried sample(s)' in capsys.readouterr().out
  answers = fill_answers(workdir + '/queries/round_0.csv')
  assert label.main(['import', '--workdir', workdir, '--file', answers]) == 0
  experiment.run(cfg, workdir)  # resumes from the checkpoint, trains round 1 on the labels
  assert label.main(['export', '--workdir', workdir]) == 0

  here = gcs['root'] / 'bkt' / 'exp' / 'run'
  res = check_outputs(str(here), cfg)  # results, selections, the plot, TensorBoard
  assert sorted(os.listdir(here)) == [
      'diagnostics', 'labels.jsonl', 'labels_export.csv', 'learning_curve.png', 'queries',
      'results.json', 'selections.jsonl', 'tensorboard']
  assert sorted(os.listdir(here / 'queries')) == ['answers_0.csv', 'round_0.csv']
  ledger = [line for line in (here / 'labels.jsonl').read_text().splitlines()]
  assert len(ledger) == 50 and len((here / 'labels_export.csv').read_text().splitlines()) == 51
  with np.load(here / 'diagnostics' / 'round_0.npz') as diag:
    assert len(diag['ids']) == cfg.dataset.num_train - cfg.al.initial_size
  assert [r['num_labeled'] for r in res['rounds']] == [100, 150]
  # Checkpoints: both runs handed orbax the workdir's checkpoints folder.
  assert handed == [workdir + '/checkpoints'] * 2
  assert sorted(os.listdir(tmp_path / 'orbax' / 'rounds')) == ['1', '2']  # rounds done
  assert gcs['renamed'] == []  # gs:// writes are single object writes (orbax renames locally)
