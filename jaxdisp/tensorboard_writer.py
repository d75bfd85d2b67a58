"""TensorBoard scalars, written by tensorboardX (no TensorFlow needed).

tensorboardX writes the ``events.out.tfevents.*`` files: TFRecord framing around serialized
``tensorflow.Event`` protocol buffers (protobuf comes with orbax), which TensorBoard's scalars
dashboard shows as it does TensorFlow's own. Viewing the files needs only ``pip install
tensorboard``. Each ``write_scalars`` is one event, flushed at once, so a live TensorBoard sees
every epoch. A ``gs://`` folder is written through :mod:`jaxdisp.files` (``etils.epath``): an
object cannot be appended to, so the event file is kept in memory and every flush writes it
whole, as one object.

TensorBoard output never stops an experiment: without tensorboardX installed, :func:`create`
logs one warning and returns a writer that does nothing; if the folder cannot be written (a full
disk, a read-only workdir), the writer logs one warning that TensorBoard output is off and
ignores later calls.
"""

from __future__ import annotations

import io
import os
import time

from absl import logging

from jaxdisp import files

_SUFFIX = f'.{os.getpid()}.jaxdisp'  # events.out.tfevents.<time>.<host>.<pid>.jaxdisp


class _ObjectFile:
  """An event file at a URI: the records so far, written as one object on every flush."""

  def __init__(self, path: str):
    self.path, self._records = path, io.BytesIO()

  def write(self, data: bytes) -> None:
    self._records.write(data)

  def flush(self) -> None:
    files.atomic_write(self.path, self._records.getvalue())

  def close(self) -> None:
    self.flush()


class _ObjectFiles:
  """tensorboardX's writer factory for ``gs://`` paths (instead of its google-cloud-storage one)."""

  def open(self, path: str) -> _ObjectFile:
    return _ObjectFile(path)

  def directory_check(self, path: str) -> None:
    del path  # object stores have no folders to make


def _tensorboardx():
  """tensorboardX's event writer and summary builder, or None when it is not installed."""
  try:
    # pylint: disable=g-import-not-at-top
    from tensorboardX import event_file_writer, record_writer, summary
    from tensorboardX.proto import event_pb2, summary_pb2
  except ImportError:
    return None
  record_writer.register_writer_factory('gs', _ObjectFiles())
  return event_file_writer, summary, event_pb2, summary_pb2


class EventFileWriter:
  """Appends scalar events to a new ``events.out.tfevents.*`` file in ``logdir``.

  The file is created on the first write (a run that writes nothing leaves no file).
  """

  def __init__(self, logdir: str, tensorboardx):
    self.logdir = logdir
    self._tbx = tensorboardx
    self._events = None
    self._off = False

  def _open(self):
    event_file_writer = self._tbx[0]
    if not files.is_remote(self.logdir):
      files.makedirs(self.logdir)
    self._events = event_file_writer.EventsWriter(os.path.join(self.logdir, 'events'), _SUFFIX)

  def _guard(self, action, *args):
    if self._off:
      return
    try:
      action(*args)
    except Exception as e:  # pylint: disable=broad-except
      # OSError locally; a remote filesystem's backend raises its own errors
      self._off = True
      logging.warning('TensorBoard output is off: cannot write to %s (%s)', self.logdir,
                      getattr(e, 'strerror', None) or e)

  def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
    _, summary, event_pb2, summary_pb2 = self._tbx

    def write():
      if self._events is None:
        self._open()
      values = [v for tag, x in scalars.items() for v in summary.scalar(tag, float(x)).value]
      self._events.write_event(event_pb2.Event(wall_time=time.time(), step=int(step),
                                               summary=summary_pb2.Summary(value=values)))
      self._events.flush()
    self._guard(write)

  def flush(self) -> None:
    self._guard(lambda: self._events and self._events.flush())

  def close(self) -> None:
    if self._events is not None:
      self._guard(self._events.close)
      self._events = None


class NoopWriter:
  """For processes other than the one that writes outputs, and installs without tensorboardX."""

  def write_scalars(self, step, scalars):
    del step, scalars

  def flush(self):
    pass

  def close(self):
    pass


def create(logdir: str, write: bool = True):
  """The writer :class:`jaxdisp.progress.Progress` uses: an event-file writer, or a no-op when
  ``write`` is False (processes other than process 0) or tensorboardX is not installed."""
  if not write:
    return NoopWriter()
  tensorboardx = _tensorboardx()
  if tensorboardx is None:
    logging.warning('TensorBoard output is off: tensorboardX is not installed '
                    '(pip install tensorboardX)')
    return NoopWriter()
  return EventFileWriter(logdir, tensorboardx)
