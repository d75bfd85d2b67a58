"""Faults of the label ledger and its CLI (issue 23): digit class names, a torn ledger tail, and
workdirs the importer cannot use. One real files-oracle run on an image folder whose classes are
the folders ``1/ 2/ 3/`` (so class '1' has index 0), stopped after round 0, copied per test."""

import contextlib
import csv
import errno
import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from jaxdisp import config_lib, label, oracle
from jaxdisp.cli import load_config
from jaxdisp.experiment import run as run_experiment
from _helpers import REPO, load_results

CLASSES = ('1', '2', '3')  # sorted folder names: index 0, 1, 2


def folder_config(root, cache):
  cfg = load_config(os.path.join(REPO, 'configs', 'demo.py'))
  for key, value in {
      'strategy': 'random', 'dataset.source': 'folder', 'dataset.root': str(root),
      'dataset.cache_dir': str(cache), 'dataset.num_classes': 0, 'dataset.image_size': 8,
      'model.width': 4, 'train.epochs': 1, 'train.batch_size': 8, 'train.eval_batch_size': 8,
      'al.initial_size': 9, 'al.budget': 15, 'al.rounds': 1, 'oracle.kind': 'files',
      'log.progress_seconds': 0.0}.items():
    config_lib.set_key(cfg, key, value)
  return cfg


@pytest.fixture(scope='module')
def _template(tmp_path_factory):
  base = tmp_path_factory.mktemp('digits')
  rng = np.random.default_rng(0)
  for split, n in (('train', 10), ('test', 2)):
    for c in CLASSES:
      os.makedirs(base / 'ds' / split / c)
      for i in range(n):
        img = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(img).save(base / 'ds' / split / c / f'{i}.png')
  cfg = folder_config(base / 'ds', base / 'cache')
  with contextlib.redirect_stdout(io.StringIO()):
    assert int(run_experiment(cfg, str(base / 'w')).round) == 1  # waits for 15 labels
  return cfg, str(base / 'w')


@pytest.fixture
def run(_template, tmp_path):
  """(cfg, workdir, queries): the waiting run (a private copy) and its 15 queried samples as
  (id, true class folder) from the queries file's ``file`` column (``train/<class>/<i>.png``)."""
  cfg, template = _template
  workdir = str(tmp_path / 'w')
  shutil.copytree(template, workdir)
  with open(os.path.join(workdir, 'queries', 'round_0.csv')) as f:
    queries = [(int(q['id']), q['file'].split('/')[1]) for q in csv.DictReader(f)]
  assert len(queries) == 15 and load_results(workdir)['dataset']['class_names'] == list(CLASSES)
  return cfg, workdir, queries


def answers(tmp_path, rows, name='answers.csv'):
  path = tmp_path / name
  path.write_text('id,label\n' + ''.join(f'{i},{a}\n' for i, a in rows))
  return str(path)


def imported(capsys, workdir, path, *extra):
  status = label.main(['import', '--workdir', workdir, '--file', path, *extra])
  out = capsys.readouterr()
  return status, out.out.strip().splitlines(), out.err.strip().splitlines()


def ledger_classes(workdir):
  return {i: (e['label'], e['class']) for i, e in oracle.read_ledger(workdir).items()}


@pytest.mark.parametrize('by', ['index', 'name'])
def test_digit_class_names_are_refused_when_ambiguous_and_land_right_with_by(by, run, tmp_path,
                                                                             capsys):
  _, workdir, queries = run
  write = (lambda c: CLASSES.index(c)) if by == 'index' else (lambda c: c)
  path = answers(tmp_path, [(i, write(c)) for i, c in queries])
  # '1' and '2' are a class name and another class's index: read as neither, with a line each.
  ambiguous = [(n, i) for n, (i, c) in enumerate(queries, 2) if str(write(c)) in ('1', '2')]
  assert ambiguous
  status, _, err = imported(capsys, workdir, path)
  assert status == 2
  assert len(err) == len(ambiguous) + 1 and err[-1].startswith('error: nothing imported')
  for (n, i), line in zip(ambiguous, err):
    assert line.startswith(f'error: {path}: line {n}: id {i}: label ')
    assert 'is ambiguous: the class named' in line and 'say which with --by name or --by index' in line
  assert "label '1' is ambiguous: the class named '1' (index 0) or the class with index 1 ('2')" \
      in '\n'.join(err)
  assert not os.path.exists(oracle.ledger_path(workdir))

  status, out, err = imported(capsys, workdir, path, '--by', by)
  assert (status, err) == (0, [])
  assert out[0].startswith('imported 15 new label(s)')
  assert ledger_classes(workdir) == {i: (CLASSES.index(c), c) for i, c in queries}

  other = 'name' if by == 'index' else 'index'  # the same file read the other way: refused whole
  shutil.copy(oracle.ledger_path(workdir), tmp_path / 'before')
  assert imported(capsys, workdir, path, '--by', other)[0] == 2
  assert (tmp_path / 'before').read_bytes() == open(oracle.ledger_path(workdir), 'rb').read()


def test_an_answer_with_one_reading_is_read_so_and_by_is_strict(run, tmp_path, capsys):
  _, workdir, queries = run
  (i0, c0), (i1, c1) = queries[0], queries[1]
  index_only, name_only = '0', '3'  # no class is named '0'; there is no class index 3
  status, _, err = imported(capsys, workdir, answers(tmp_path, [(i0, index_only)], 'a.csv'),
                            '--by', 'name')
  assert status == 2 and "line 2: label '0' is not a class name (1, 2, 3)" in err[0]
  status, _, err = imported(capsys, workdir, answers(tmp_path, [(i0, name_only)], 'b.csv'),
                            '--by', 'index')
  assert status == 2 and "line 2: label '3' is not a class index (0-2)" in err[0]
  status, _, err = imported(capsys, workdir, answers(tmp_path, [(i0, index_only),
                                                                (i1, name_only)], 'c.csv'))
  assert (status, err) == (0, [])
  assert ledger_classes(workdir) == {i0: (0, '1'), i1: (2, '3')}


def test_a_torn_ledger_tail_is_set_aside_and_the_reimport_run_and_export_go_on(run, tmp_path,
                                                                                capsys):
  cfg, workdir, queries = run
  path = answers(tmp_path, [(i, c) for i, c in queries])
  ledger = oracle.ledger_path(workdir)
  half = answers(tmp_path, [(i, c) for i, c in queries[:5]], 'half.csv')
  assert imported(capsys, workdir, half, '--by', 'name')[0] == 0
  complete = open(ledger, 'rb').read()
  torn = json.dumps({'id': queries[5][0], 'label': 0, 'class': '1'}).encode()[:-9]
  with open(ledger, 'ab') as f:
    f.write(torn)  # a crash mid-append: no newline, not JSON

  status, out, err = imported(capsys, workdir, path, '--by', 'name')
  assert status == 0 and out[0].startswith('imported 10 new label(s)'), (out, err)
  assert len(err) == 1 and err[0].startswith(f'warning: {ledger}: its last line was torn')
  aside = [n for n in os.listdir(workdir) if n.startswith('labels.jsonl.torn-')]
  assert len(aside) == 1 and f'set aside in {os.path.join(workdir, aside[0])}' in err[0]
  assert open(os.path.join(workdir, aside[0]), 'rb').read() == torn
  now = open(ledger, 'rb').read()
  assert now.startswith(complete) and now.endswith(b'\n') and now.count(b'\n') == 15
  assert ledger_classes(workdir) == {i: (CLASSES.index(c), c) for i, c in queries}

  with open(ledger, 'ab') as f:  # torn again: the run mends it before reading
    f.write(torn)
  with contextlib.redirect_stdout(io.StringIO()):
    assert int(run_experiment(cfg, workdir).round) == 2  # round 1 trained on the 24 labels
  assert 'its last line was torn' in capsys.readouterr().err
  assert [r['num_labeled'] for r in load_results(workdir)['rounds']] == [9, 24]
  assert open(ledger, 'rb').read() == now

  with open(ledger, 'ab') as f:  # a whole entry that lost only its newline: kept, mended
    f.write(now.splitlines()[0])
  assert label.main(['export', '--workdir', workdir, '--out', str(tmp_path / 'e.csv')]) == 0
  assert 'lost its newline' in capsys.readouterr().err
  assert open(ledger, 'rb').read() == now + now.splitlines(keepends=True)[0]
  assert len((tmp_path / 'e.csv').read_text().splitlines()) == 16


def test_a_corrupt_middle_line_is_still_refused(run, tmp_path, capsys):
  _, workdir, queries = run
  with open(oracle.ledger_path(workdir), 'w') as f:
    f.write('{"id": 1, "label": 0}\n{"id": 2, "lab\n{"id": 3, "label": 0}\n')
  status, _, err = imported(capsys, workdir, answers(tmp_path, queries))
  assert status == 2 and len(err) == 1
  assert err[0].startswith(f'error: {oracle.ledger_path(workdir)} line 2 is not a label entry')


def test_export_outside_a_workdir_writes_nothing(tmp_path, capsys):
  empty = tmp_path / 'notarun'
  empty.mkdir()
  assert label.main(['export', '--workdir', str(empty)]) == 2
  assert capsys.readouterr().err.strip().splitlines() == [
      f'error: {empty} is not the workdir of a run (it has no results.json): run the experiment '
      "first, or pass the run's --workdir"]
  assert os.listdir(empty) == []


def test_import_into_a_simulated_run_is_refused(run, tmp_path, capsys):
  _, workdir, queries = run
  res = load_results(workdir)
  res['config']['oracle']['kind'] = 'simulated'  # what a simulated run's results.json says
  with open(os.path.join(workdir, 'results.json'), 'w') as f:
    json.dump(res, f)
  status, out, err = imported(capsys, workdir, answers(tmp_path, queries))
  assert (status, out, len(err)) == (2, [], 1)
  assert err[0].startswith(f'error: {workdir} is a run with oracle.kind=simulated: it takes its '
                           'labels from the dataset and never reads a label ledger')
  assert not os.path.exists(oracle.ledger_path(workdir))


@pytest.mark.parametrize('damage', ['truncated', 'not a run', 'selections'])
def test_a_corrupt_results_json_is_one_line_naming_it(damage, run, tmp_path, capsys):
  _, workdir, queries = run
  name = 'selections.jsonl' if damage == 'selections' else 'results.json'
  target = os.path.join(workdir, name)
  text = open(target).read()
  with open(target, 'w') as f:
    f.write(text[:len(text) // 2] if damage != 'not a run' else '[1, 2]')
  for argv in (['import', '--file', answers(tmp_path, queries)], ['export']):
    assert label.main(argv + ['--workdir', workdir]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: ') and target in err[0], err
    assert 'Traceback' not in err[0]
  assert not os.path.exists(oracle.ledger_path(workdir))
  assert not os.path.exists(os.path.join(workdir, 'labels_export.csv'))


def test_a_refused_ledger_append_is_one_line_and_leaves_the_ledger_as_it_was(run, tmp_path,
                                                                             capsys):
  """A disk that fills while the ledger is appended to (ENOSPC at its fsync, through the
  sitecustomize fault injector of test_storage_and_signals): one line naming the ledger, the
  partial append cut off, and the same import after making room imports it all."""
  from test_storage_and_signals import one_error_line, shim_env  # pylint: disable=g-import-not-at-top
  _, workdir, queries = run
  first = answers(tmp_path, [(i, c) for i, c in queries[:5]], 'first.csv')
  assert imported(capsys, workdir, first, '--by', 'name')[0] == 0
  ledger_file = oracle.ledger_path(workdir)
  before = open(ledger_file, 'rb').read()
  rest = answers(tmp_path, [(i, c) for i, c in queries[5:]], 'rest.csv')
  command = [sys.executable, '-m', 'jaxdisp.label', 'import', '--workdir', workdir, '--file',
             rest, '--by', 'name']
  env = shim_env(tmp_path, FAIL_WRITE=r'/labels\.jsonl$', FAIL_ERRNO=errno.ENOSPC)
  proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                        env={**os.environ, **env})
  assert proc.returncode == 2, proc.stderr
  assert one_error_line(proc) == (
      f'error: cannot write {ledger_file}: no space left on the device; make room (or lift the '
      'limit), then rerun the same command')
  assert open(ledger_file, 'rb').read() == before  # no partial lines
  proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
  assert proc.returncode == 0 and proc.stdout.startswith('imported 10 new label(s)'), proc.stderr
  assert ledger_classes(workdir) == {i: (CLASSES.index(c), c) for i, c in queries}
