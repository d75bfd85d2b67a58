"""TensorBoard scalars without TensorFlow: a pure-Python event-file writer.

TensorBoard reads ``events.out.tfevents.*`` files: TFRecord framing (length, masked CRC-32C of
the length, payload, masked CRC-32C of the payload) around serialized ``tensorflow.Event``
protocol buffers. A scalar is an ``Event{wall_time, step, summary{value{tag, simple_value}}}``,
which TensorBoard's scalars dashboard shows as it does TensorFlow's own. The few protobuf fields
needed are encoded here by hand, so writing needs neither TensorFlow nor ``tensorboard`` nor
``protobuf`` (clu's writer imports TensorFlow; ``tensorboard``'s own writer imports it too
whenever it is installed). Viewing the files needs only ``pip install tensorboard``.

If the folder cannot be written, the writer logs one warning that TensorBoard output is off and
ignores later calls: a full disk or a read-only workdir never stops an experiment over its
TensorBoard curves.
"""

from __future__ import annotations

import os
import socket
import struct
import time

from absl import logging

_CRC_TABLE = []
for _n in range(256):
  _c = _n
  for _ in range(8):
    _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1  # CRC-32C (Castagnoli), reflected
  _CRC_TABLE.append(_c)


def crc32c(data: bytes) -> int:
  crc = 0xFFFFFFFF
  for b in data:
    crc = _CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord(payload: bytes) -> bytes:
  """One TFRecord: uint64 length, masked CRC of it, payload, masked CRC of the payload."""
  length = struct.pack('<Q', len(payload))
  return (length + struct.pack('<I', _masked_crc(length)) + payload
          + struct.pack('<I', _masked_crc(payload)))


def _varint(n: int) -> bytes:
  n &= (1 << 64) - 1  # negative int64 as two's complement (10 bytes), as protobuf does
  out = bytearray()
  while True:
    byte = n & 0x7F
    n >>= 7
    if n:
      out.append(byte | 0x80)
    else:
      out.append(byte)
      return bytes(out)


def _field_bytes(number: int, value: bytes) -> bytes:
  return _varint(number << 3 | 2) + _varint(len(value)) + value


def event(wall_time: float, step: int = 0, *, file_version: str | None = None,
          scalars: dict[str, float] | None = None) -> bytes:
  """A serialized ``tensorflow.Event`` (fields 1 wall_time, 2 step, 3 file_version, 5 summary)."""
  out = b'\x09' + struct.pack('<d', wall_time) + b'\x10' + _varint(int(step))
  if file_version is not None:
    out += _field_bytes(3, file_version.encode())
  if scalars:
    # Summary{repeated Value value = 1}; Value{string tag = 1; float simple_value = 2}
    values = b''.join(
        _field_bytes(1, _field_bytes(1, tag.encode()) + b'\x15' + struct.pack('<f', float(v)))
        for tag, v in scalars.items())
    out += _field_bytes(5, values)
  return out


class EventFileWriter:
  """Appends scalar events to a new ``events.out.tfevents.*`` file in ``logdir``.

  The file is created on the first write (a run that writes nothing leaves no file); every
  ``write_scalars`` is one small write, flushed at once.
  """

  def __init__(self, logdir: str):
    self.logdir = logdir
    self.path = None
    self._file = None
    self._off = False

  def _open(self):
    os.makedirs(self.logdir, exist_ok=True)
    now = time.time()
    self.path = os.path.join(self.logdir, f'events.out.tfevents.{int(now):010d}.'
                             f'{socket.gethostname()}.{os.getpid()}.jaxdisp')
    self._file = open(self.path, 'ab')
    self._file.write(tfrecord(event(now, 0, file_version='brain.Event:2')))

  def _guard(self, action, *args):
    if self._off:
      return
    try:
      action(*args)
    except OSError as e:
      self._off = True
      logging.warning('TensorBoard output is off: cannot write to %s (%s)', self.logdir,
                      e.strerror or e)

  def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
    def write():
      if self._file is None:
        self._open()
      self._file.write(tfrecord(event(time.time(), step, scalars=scalars)))
      self._file.flush()  # one small write per epoch: a live TensorBoard sees every epoch
    self._guard(write)

  def flush(self) -> None:
    self._guard(lambda: self._file and self._file.flush())

  def close(self) -> None:
    if self._file is not None:
      self._guard(self._file.close)
      self._file = None


class NoopWriter:
  """For processes other than the one that writes outputs."""

  def write_scalars(self, step, scalars):
    del step, scalars

  def flush(self):
    pass

  def close(self):
    pass


def create(logdir: str, write: bool = True):
  """The writer ``reporting.Progress`` uses: an event-file writer, or a no-op when ``write`` is
  False (processes other than process 0)."""
  return EventFileWriter(logdir) if write else NoopWriter()
