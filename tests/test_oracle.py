"""The files oracle and the label ledger: queries out, validated answers in, nothing ever lost."""

import contextlib
import csv
import io
import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

from jaxdisp import data, label, oracle
from _helpers import REPO, load_results, tiny_config
from jaxdisp.experiment import run as run_experiment


def true_labels(cfg):
  d = cfg.dataset
  return data.synthetic(d.num_train, d.num_test, d.num_classes, d.image_size, d.data_seed
                        ).train_labels


def read_queries(workdir, r):
  with open(os.path.join(workdir, 'queries', f'round_{r}.csv')) as f:
    return list(csv.DictReader(f))


def write_answers(path, rows, header=('id', 'label')):
  with open(path, 'w', newline='') as f:
    w = csv.writer(f)
    w.writerow(header)
    w.writerows(rows)
  return str(path)


def answer_round(workdir, r, labels, tmp_path, names=True):
  rows = [(q['id'], f'class_{labels[int(q["id"])]}' if names else labels[int(q['id'])])
          for q in read_queries(workdir, r)]
  return write_answers(tmp_path / f'answers_{r}.csv', rows)


def ledger_bytes(workdir):
  path = oracle.ledger_path(workdir)
  return open(path, 'rb').read() if os.path.exists(path) else b''


@pytest.fixture(scope='module')
def _waiting_template(tmp_path_factory):
  """One files-oracle run stopped after round 0 (trained once per module, then copied)."""
  workdir = str(tmp_path_factory.mktemp('oracle') / 'w')
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    state = run_experiment(tiny_config(**{'oracle.kind': 'files'}), workdir)
  assert int(state.round) == 1
  assert 'waiting for labels: 50 queried sample(s)' in out.getvalue()
  return workdir


@pytest.fixture
def waiting_run(_waiting_template, tmp_path):
  """A files-oracle run stopped after round 0, waiting for 50 labels (a private copy)."""
  cfg = tiny_config(**{'oracle.kind': 'files'})
  workdir = str(tmp_path / 'w')
  shutil.copytree(_waiting_template, workdir)
  return cfg, workdir


def test_files_oracle_with_true_answers_reproduces_the_simulated_run(waiting_run, tmp_path,
                                                                      capsys):
  cfg, workdir = waiting_run
  labels = true_labels(cfg)
  queries = read_queries(workdir, 0)
  assert len(queries) == 50 and list(queries[0]) == list(oracle.QUERY_COLUMNS)
  assert all(q['label'] == '' for q in queries)

  # No answers yet: rerunning trains nothing and asks again.
  assert int(run_experiment(cfg, workdir).round) == 1

  # Half the answers (as class indices): still waiting, for the other 25.
  half = write_answers(tmp_path / 'half.csv',
                       [(q['id'], labels[int(q['id'])]) for q in queries[:25]])
  assert label.main(['import', '--workdir', workdir, '--file', half]) == 0
  assert int(run_experiment(cfg, workdir).round) == 1
  assert 'waiting for labels: 25 queried' in capsys.readouterr().out

  # The queries file itself, filled in, imports as is (the first 25 rows are no-ops).
  for q in queries:
    q['label'] = f'class_{labels[int(q["id"])]}'
  with open(os.path.join(workdir, 'queries', 'round_0.csv'), 'w', newline='') as f:
    w = csv.DictWriter(f, oracle.QUERY_COLUMNS)
    w.writeheader()
    w.writerows(queries)
  filled = os.path.join(workdir, 'queries', 'round_0.csv')
  assert label.main(['import', '--workdir', workdir, '--file', filled]) == 0
  assert 'imported 25 new label(s)' in capsys.readouterr().out
  before = ledger_bytes(workdir)
  assert label.main(['import', '--workdir', workdir, '--file', filled]) == 0  # no-op
  assert ledger_bytes(workdir) == before

  assert int(run_experiment(cfg, workdir).round) == 2  # round 1 trained, waits for its queries
  assert label.main(['import', '--workdir', workdir,
                     '--file', answer_round(workdir, 1, labels, tmp_path)]) == 0
  run_experiment(cfg, workdir)

  simulated = tmp_path / 'simulated'
  run_experiment(tiny_config(), str(simulated))
  a, b = load_results(workdir), load_results(simulated)
  assert [r['selected'] for r in a['rounds']] == [r['selected'] for r in b['rounds']]
  assert [r['test_accuracy'] for r in a['rounds']] == [r['test_accuracy'] for r in b['rounds']]

  out = tmp_path / 'export.csv'
  assert label.main(['export', '--workdir', workdir, '--out', str(out)]) == 0
  with open(out) as f:
    exported = list(csv.DictReader(f))
  assert len(exported) == 100
  assert all(int(e['label']) == labels[int(e['id'])] for e in exported)


def test_answers_change_what_the_model_trains_on(waiting_run, tmp_path):
  cfg, workdir = waiting_run
  wrong = np.zeros_like(true_labels(cfg))  # an annotator who answers class_0 to everything
  label.main(['import', '--workdir', workdir, '--file', answer_round(workdir, 0, wrong, tmp_path)])
  train_labels = oracle.training_labels(workdir, true_labels(cfg))
  queried = [int(q['id']) for q in read_queries(workdir, 0)]
  assert (train_labels[queried] == 0).all()
  unqueried = np.setdiff1d(np.arange(len(train_labels)), queried)
  np.testing.assert_array_equal(train_labels[unqueried], true_labels(cfg)[unqueried])


BAD_FILES = {
    'empty file': ('', 'the file is empty'),
    'wrong columns': ('sample,answer\n1,cat\n', 'needs columns id and label, found: sample,answer'),
    'header only': ('id,label\n', 'has a header but no rows'),
    'unknown id': ('id,label\n{q0},class_1\n99999,class_1\n',
                   'line 3: unknown id 99999 (the training set has 600 samples)'),
    'id not queried': ('id,label\n{q0},class_1\n{unq},class_1\n', 'line 3: id {unq} was never queried'),
    'label outside classes': ('id,label\n{q0},zebra\n', "line 2: label 'zebra' is not a class"),
    'label index out of range': ('id,label\n{q0},10\n', "line 2: label '10' is not a class"),
    'not an id': ('id,label\nabc,class_1\n', "line 2: id 'abc' is not a dataset index"),
    'conflicting duplicates': ('id,label\n{q0},class_1\n{q1},class_2\n{q0},class_3\n',
                               "line 4: id {q0} is labeled 'class_3' here but 'class_1' on line 2"),
    # issue 17: encodings, digits and shapes a spreadsheet can produce
    'not utf-8': (b'id,label\n{q0},class_1\n{q1},caf\xe9\n',
                  'line 3: byte 0xe9 is not UTF-8 text; save the file as "CSV UTF-8"'),
    'arabic-indic digits': ('id,label\n{q0},class_1\n\u0663,class_1\n',
                            "line 3: id '\u0663' is not a dataset index (write it with the digits 0-9)"),
    'superscript label index': ('id,label\n{q0},\u00b2\n', "line 2: label '\u00b2' is not a class"),
    'excel workbook': (b'PK\x03\x04\x14\x00\x06\x00', 'is a zip file (an Excel workbook?)'),
    'two label columns': ('id,label,Label\n{q0},class_1,class_2\n', "has 2 'label' columns"),
    'invisible header character': ('id,lab\u200bel\n{q0},class_1\n',
                                   "found: id,'lab\\u200bel'"),
}


@pytest.mark.parametrize('kind', sorted(BAD_FILES))
def test_bad_answers_are_rejected_whole_with_a_reason_per_row(kind, waiting_run, tmp_path,
                                                               capsys):
  _, workdir = waiting_run
  queried = [int(q['id']) for q in read_queries(workdir, 0)]
  unq = min(set(range(600)) - set(queried))  # in the initial set or the pool: never queried
  text, reason = BAD_FILES[kind]
  fmt = {'q0': queried[0], 'q1': queried[1], 'unq': unq}
  path = tmp_path / 'answers.csv'
  if isinstance(text, bytes):
    path.write_bytes(text.decode('latin-1').format(**fmt).encode('latin-1'))
  else:
    path.write_text(text.format(**fmt), encoding='utf-8')
  before = ledger_bytes(workdir)
  assert label.main(['import', '--workdir', workdir, '--file', str(path)]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert any(reason.format(**fmt) in line for line in err), err
  assert err[-1].startswith('error: nothing imported')
  assert ledger_bytes(workdir) == before  # nothing half-applied


def test_relabeling_a_ledger_entry_is_refused(waiting_run, tmp_path, capsys):
  _, workdir = waiting_run
  q0 = int(read_queries(workdir, 0)[0]['id'])
  assert label.main(['import', '--workdir', workdir,
                     '--file', write_answers(tmp_path / 'a.csv', [(q0, 'class_1')])]) == 0
  before = ledger_bytes(workdir)
  assert label.main(['import', '--workdir', workdir, '--file', write_answers(
      tmp_path / 'b.csv', [(q0, 'class_2'), (int(read_queries(workdir, 0)[1]['id']), 3)])]) == 2
  assert "already labeled 'class_1' in the ledger" in capsys.readouterr().err
  assert ledger_bytes(workdir) == before


def test_labels_survive_sigkill_right_after_import(waiting_run, tmp_path):
  cfg, workdir = waiting_run
  answers = answer_round(workdir, 0, true_labels(cfg), tmp_path)
  proc = subprocess.run([sys.executable, '-m', 'jaxdisp.label', 'import', '--workdir', workdir,
                         '--file', answers], cwd=REPO, capture_output=True, text=True,
                        env={**os.environ, 'JAXDISP_FAULT_KILL_AT': 'label_import'})
  assert proc.returncode == -9
  ledger = oracle.read_ledger(workdir)
  assert len(ledger) == 50
  assert {e['round'] for e in ledger.values()} == {0}


def test_a_torn_last_ledger_line_is_ignored_and_not_glued_to(waiting_run, tmp_path, capsys):
  cfg, workdir = waiting_run
  labels = true_labels(cfg)
  q0 = int(read_queries(workdir, 0)[0]['id'])
  path = oracle.ledger_path(workdir)
  with open(path, 'w') as f:
    f.write(json.dumps({'id': q0, 'label': int(labels[q0]), 'round': 0})[:-5])  # torn
  assert oracle.read_ledger(workdir) == {}
  assert label.main(['import', '--workdir', workdir,
                     '--file', answer_round(workdir, 0, labels, tmp_path)]) == 0
  assert 'its last line was torn' in capsys.readouterr().err
  assert len(oracle.read_ledger(workdir)) == 50
  assert open(path).read().count('\n') == 50  # the torn line set aside, not made a middle line


def test_a_whole_last_ledger_entry_without_its_newline_is_kept(waiting_run, tmp_path, capsys):
  cfg, workdir = waiting_run
  labels = true_labels(cfg)
  q0 = int(read_queries(workdir, 0)[0]['id'])
  with open(oracle.ledger_path(workdir), 'w') as f:
    f.write(json.dumps({'id': q0, 'label': int(labels[q0]), 'round': 0}))  # no newline
  assert list(oracle.read_ledger(workdir)) == [q0]
  assert label.main(['import', '--workdir', workdir,
                     '--file', answer_round(workdir, 0, labels, tmp_path)]) == 0
  captured = capsys.readouterr()
  assert 'lost its newline' in captured.err and 'imported 49 new label(s)' in captured.out
  assert len(oracle.read_ledger(workdir)) == 50


@pytest.mark.parametrize('header, encoding, delimiter', [
    ('id, label', 'utf-8', ','),  # the space after the comma once dropped every label silently
    (' ID ,Label ', 'utf-8', ','),
    ('id,label', 'utf-8-sig', ','),  # Excel's "CSV UTF-8": a byte-order mark before "id"
    ('"id","label"', 'utf-8-sig', ','),
    ('id;label', 'utf-8', ';'),  # Excel in locales with a decimal comma
    ('id\tlabel', 'utf-16', '\t'),  # Excel's "Unicode text"
])
def test_answers_headers_are_read_whatever_their_spacing_case_bom_or_separator(
    header, encoding, delimiter, waiting_run, tmp_path, capsys):
  cfg, workdir = waiting_run
  labels = true_labels(cfg)
  rows = [f'{q["id"]}{delimiter} class_{labels[int(q["id"])]}' for q in read_queries(workdir, 0)]
  path = tmp_path / 'answers.csv'
  path.write_bytes(('\r\n'.join([header] + rows) + '\r\n').encode(encoding))
  assert label.main(['import', '--workdir', workdir, '--file', str(path)]) == 0
  assert 'imported 50 new label(s)' in capsys.readouterr().out
  ledger = oracle.read_ledger(workdir)
  assert {i: e['label'] for i, e in ledger.items()} == {
      int(q['id']): labels[int(q['id'])] for q in read_queries(workdir, 0)}


def test_a_directory_given_as_the_answers_file_is_one_line(waiting_run, capsys):
  _, workdir = waiting_run
  assert label.main(['import', '--workdir', workdir, '--file', workdir]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert err == [f'error: answers file {workdir} is a directory, not a CSV file']


def test_a_second_import_while_one_holds_the_ledger_stops_at_once_and_a_killed_one_does_not(
    waiting_run, tmp_path, capsys):
  """Two imports into one labels.jsonl: the second exits 2 naming the holder (issue 17). The
  holder here is a process that takes the ledger's lock and sleeps; kill -9 frees it."""
  cfg, workdir = waiting_run
  answers = answer_round(workdir, 0, true_labels(cfg), tmp_path)
  holder = subprocess.Popen(
      [sys.executable, '-c', 'import sys, time; from jaxdisp import locking\n'
       'with locking.ledger_lock(sys.argv[1]):\n print("held", flush=True); time.sleep(600)',
       oracle.ledger_path(workdir)], cwd=REPO, stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == 'held'
    assert label.main(['import', '--workdir', workdir, '--file', answers]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f'error: the label ledger {oracle.ledger_path(workdir)} is in use by '
                             f'pid {holder.pid} on {socket.gethostname()} since ')
    assert err[0].endswith('; wait for that import to finish, then import again')
    assert ledger_bytes(workdir) == b''
  finally:
    holder.kill()  # SIGKILL: no cleanup runs in the holder
    holder.wait()
  assert label.main(['import', '--workdir', workdir, '--file', answers]) == 0
  assert len(oracle.read_ledger(workdir)) == 50
