"""A lean install: no TensorFlow at startup, TF-free TensorBoard files, optional tfds."""

import importlib.util
import os
import struct
import subprocess
import sys
import types

import pytest

from jaxdisp import data, tensorboard_writer
from jaxdisp.errors import DataError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


def read_records(path):
  """TFRecord payloads of an event file, every length and payload CRC checked."""
  out = []
  with open(path, 'rb') as f:
    blob = f.read()
  pos = 0
  while pos < len(blob):
    header = blob[pos:pos + 8]
    (n,), (crc_len,) = struct.unpack('<Q', header), struct.unpack('<I', blob[pos + 8:pos + 12])
    assert crc_len == tensorboard_writer._masked_crc(header)
    payload = blob[pos + 12:pos + 12 + n]
    (crc,) = struct.unpack('<I', blob[pos + 12 + n:pos + 16 + n])
    assert crc == tensorboard_writer._masked_crc(payload)
    out.append(payload)
    pos += 16 + n
  return out


def read_scalars(logdir) -> dict:
  """``{tag: [(step, value), ...]}`` over every event file in ``logdir`` (tensorboard's protos)."""
  event_pb2 = pytest.importorskip('tensorboard.compat.proto.event_pb2')
  scalars = {}
  for name in sorted(os.listdir(logdir)):
    if not name.startswith('events.out.tfevents.'):
      continue
    records = read_records(os.path.join(logdir, name))
    assert event_pb2.Event.FromString(records[0]).file_version == 'brain.Event:2'
    for payload in records[1:]:
      e = event_pb2.Event.FromString(payload)
      for v in e.summary.value:
        scalars.setdefault(v.tag, []).append((e.step, v.simple_value))
  return scalars


def test_crc32c_matches_the_standard_check_value():
  assert tensorboard_writer.crc32c(b'123456789') == 0xE3069283  # RFC 3720's CRC-32C check
  assert tensorboard_writer.crc32c(b'') == 0


def test_event_files_read_back_with_tensorboard(tmp_path):
  """What TensorBoard's own loader (EventAccumulator, with or without TF) makes of the file."""
  pytest.importorskip('tensorboard')
  w = tensorboard_writer.create(str(tmp_path / 'tb'))
  w.write_scalars(1, {'train/loss': 2.5, 'train/accuracy': 0.25})
  w.write_scalars(2, {'train/loss': 1.25, 'train/accuracy': 0.5})
  w.write_scalars(300, {'al/test_accuracy': 0.625})
  w.close()
  assert read_scalars(tmp_path / 'tb') == {'train/loss': [(1, 2.5), (2, 1.25)],
                                           'train/accuracy': [(1, 0.25), (2, 0.5)],
                                           'al/test_accuracy': [(300, 0.625)]}
  # TensorBoard's own reader, in a fresh process, as it runs without TensorFlow (its stub
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
