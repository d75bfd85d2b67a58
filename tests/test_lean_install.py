"""A lean install: no TensorFlow at startup, TensorBoard files by tensorboardX (or none without
it), optional tfds."""

import importlib.util
import inspect
import os
import subprocess
import sys
import types

import pytest

from _helpers import REPO, cli, load_results
from jaxdisp import data, progress, tensorboard_writer
from jaxdisp.errors import DataError


def imported_modules(stderr: str) -> set:
  """Module names from ``python -X importtime`` output."""
  return {line.rsplit('|', 1)[1].strip() for line in stderr.splitlines()
          if line.startswith('import time:') and '|' in line}


def test_startup_does_not_import_tensorflow():
  proc = subprocess.run([sys.executable, '-X', 'importtime', '-m', 'jaxdisp.main', '--helpfull'],
                        cwd=REPO, capture_output=True, text=True, timeout=120)
  assert '--config' in proc.stdout and '--workdir' in proc.stdout, proc.stderr[-2000:]
  mods = imported_modules(proc.stderr)
  assert 'jaxdisp.errors' in mods  # imported by jaxdisp.main (run as __main__)
  heavy = sorted(m for m in mods if m.split('.')[0] in ('tensorflow', 'tensorflow_datasets',
                                                        'clu', 'tensorboard'))
  assert not heavy, heavy


def read_scalars(logdir) -> dict:
  """``{tag: [(step, value), ...]}`` over every event file in ``logdir``, read by tensorboard's
  own event-file loader (its record reader checks every length and payload CRC)."""
  loader = pytest.importorskip('tensorboard.backend.event_processing.event_file_loader')
  scalars = {}
  for name in sorted(os.listdir(logdir)):
    if not name.startswith('events.out.tfevents.'):
      continue
    events = list(loader.LegacyEventFileLoader(os.path.join(logdir, name)).Load())
    assert events[0].file_version == 'brain.Event:2'
    for e in events[1:]:
      for v in e.summary.value:
        scalars.setdefault(v.tag, []).append((e.step, v.simple_value))
  return scalars


def test_event_files_are_written_by_tensorboardx_and_read_back_with_tensorboard(tmp_path,
                                                                                monkeypatch):
  """What TensorBoard's own loaders (with or without TF) make of the files tensorboardX wrote."""
  pytest.importorskip('tensorboard')
  record_writer = pytest.importorskip('tensorboardX.record_writer')
  records = []
  write = record_writer.RecordWriter.write
  monkeypatch.setattr(record_writer.RecordWriter, 'write',
                      lambda self, data: (records.append(data), write(self, data))[1])
  w = tensorboard_writer.create(str(tmp_path / 'tb'))
  w.write_scalars(1, {'train/loss': 2.5, 'train/accuracy': 0.25})
  w.write_scalars(2, {'train/loss': 1.25, 'train/accuracy': 0.5})
  w.write_scalars(300, {'al/test_accuracy': 0.625})
  w.close()
  assert len(records) == 4  # tensorboardX framed every record: the file version + 3 events
  assert read_scalars(tmp_path / 'tb') == {'train/loss': [(1, 2.5), (2, 1.25)],
                                           'train/accuracy': [(1, 0.25), (2, 0.5)],
                                           'al/test_accuracy': [(300, 0.625)]}
  # TensorBoard's EventAccumulator, in a fresh process, as it runs without TensorFlow (its stub
  # record reader, which checks the CRCs too); with TF installed it would read through TF.
  code = ('import sys; sys.modules["tensorflow"] = None;'
          'from tensorboard.backend.event_processing import event_accumulator as ea;'
          'a = ea.EventAccumulator(sys.argv[1]); a.Reload();'
          'print(sorted(a.Tags()["scalars"]),'
          '      [(e.step, e.value) for e in a.Scalars("train/loss")])')
  proc = subprocess.run([sys.executable, '-c', code, str(tmp_path / 'tb')], capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.strip().splitlines()[-1] == (
      "['al/test_accuracy', 'train/accuracy', 'train/loss'] [(1, 2.5), (2, 1.25)]")


def test_epoch_scalars_are_every_finite_metric_without_naming_any_strategy():
  metrics = {'loss': 0.5, 'train_accuracy': 0.75, 'steps': 10, 'learning_rate': 0.1,
             'finite': True, 'first_bad_step': -1, 'aux_loss': 0.25, 'other': float('nan')}
  assert progress.epoch_scalars(metrics) == {
      'train/loss': 0.5, 'train/accuracy': 0.75, 'train/learning_rate': 0.1,
      'train/aux_loss': 0.25}
  assert 'aux_loss' not in inspect.getsource(progress)


def test_unwritable_tensorboard_folder_turns_the_output_off_with_one_warning(caplog):
  w = tensorboard_writer.create('/dev/null/tb')
  for step in range(3):
    w.write_scalars(step, {'train/loss': 1.0})
  w.flush()
  w.close()
  warnings = [r for r in caplog.records if 'TensorBoard output is off' in r.getMessage()]
  assert len(warnings) == 1


def test_other_processes_write_no_event_file(tmp_path):
  w = tensorboard_writer.create(str(tmp_path / 'tb'), write=False)
  w.write_scalars(1, {'train/loss': 1.0})
  w.close()
  assert not os.path.exists(tmp_path / 'tb')


def test_tfds_source_without_tensorflow_datasets_says_how_to_install_it(monkeypatch):
  monkeypatch.setitem(sys.modules, 'tensorflow_datasets', None)  # import raises ImportError
  with pytest.raises(DataError, match=r"pip install 'jaxdisp\[tfds\]'") as err:
    data.from_tfds('cifar10')
  assert '\n' not in str(err.value) and 'dataset.source=folder' in str(err.value)


def test_prepared_tfds_dataset_without_tensorflow_says_how_to_install_it(monkeypatch):
  prepared = types.SimpleNamespace(is_prepared=lambda: True)
  monkeypatch.setitem(sys.modules, 'tensorflow_datasets',
                      types.SimpleNamespace(builder=lambda name, data_dir=None: prepared))
  find_spec = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, 'find_spec',
                      lambda name, *a: None if name == 'tensorflow' else find_spec(name, *a))
  with pytest.raises(DataError, match=r"'cifar10' needs TensorFlow: pip install 'jaxdisp\[tfds\]'"):
    data.from_tfds('cifar10')


def test_without_tensorboardx_the_run_warns_in_one_line_and_goes_on(tmp_path):
  shim = tmp_path / 'shim'
  shim.mkdir()
  (shim / 'sitecustomize.py').write_text(
      "import sys\nsys.modules['tensorboardX'] = None  # import tensorboardX raises ImportError\n")
  workdir = tmp_path / 'w'
  proc = cli(workdir, '--config.al.rounds=0', '--config.train.epochs=2',
             env={'PYTHONPATH': os.pathsep.join([str(shim), REPO])})
  assert proc.returncode == 0
  lines = [l for l in proc.stderr.splitlines() if 'tensorboard' in l.lower()]
  assert len(lines) == 1 and 'TensorBoard output is off: tensorboardX is not installed' in lines[0]
  assert [r['num_labeled'] for r in load_results(workdir)['rounds']] == [100]
  assert not os.path.exists(workdir / 'tensorboard')
