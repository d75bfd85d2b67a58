"""A run's progress: periodic progress lines with an ETA, and per-epoch TensorBoard scalars.

Every epoch writes ``train/loss``, ``train/accuracy`` (the epoch's ``train_accuracy``),
``train/learning_rate`` and, as ``train/<name>``, every other finite metric of the epoch (a
strategy's auxiliary loss, say); every round writes ``al/test_accuracy`` at the number of labels.
"""

from __future__ import annotations

import math
import os
import time

from absl import logging

from jaxdisp import tensorboard_writer

# Metrics of ``train.EpochMetrics`` that are bookkeeping, not curves: the step count (in the
# progress line) and the NaN policy's flags.
_NOT_SCALARS = frozenset({'loss', 'train_accuracy', 'learning_rate', 'steps', 'finite',
                          'first_bad_step'})


def epoch_scalars(metrics: dict) -> dict[str, float]:
  """The TensorBoard scalars of one epoch's ``train.EpochMetrics.to_host()``."""
  m = {k: float(v) for k, v in metrics.items()}
  scalars = {'train/loss': m['loss'], 'train/accuracy': m['train_accuracy'],
             'train/learning_rate': m['learning_rate']}
  scalars.update({f'train/{k}': v for k, v in m.items()
                  if k not in _NOT_SCALARS and math.isfinite(v)})
  return scalars


class Progress:
  """Per-epoch TensorBoard scalars and periodic progress lines with ETA."""

  def __init__(self, workdir: str, cfg, total_rounds: int, write: bool = True):
    self.writer = tensorboard_writer.create(os.path.join(workdir, 'tensorboard'), write)
    self.epochs, self.rounds = cfg.train.epochs, total_rounds
    self.interval = cfg.log.progress_seconds
    self.batch_size = cfg.train.batch_size
    self._last = 0.0
    self._round_start = time.perf_counter()
    self._start_epoch = 0

  def start_round(self, round_: int, start_epoch: int) -> None:
    self._round_start, self._start_epoch = time.perf_counter(), start_epoch
    self._last = 0.0

  def on_epoch(self, round_: int, epoch: int, metrics: dict) -> None:
    """``metrics``: an epoch's ``train.EpochMetrics.to_host()``."""
    step = round_ * self.epochs + epoch + 1
    m = {k: float(v) for k, v in metrics.items()}
    self.writer.write_scalars(step, epoch_scalars(m))
    now = time.perf_counter()
    done = epoch + 1 - self._start_epoch
    if now - self._last >= self.interval or epoch + 1 == self.epochs:
      self._last = now
      per_epoch = (now - self._round_start) / max(done, 1)
      eta = per_epoch * (self.epochs - epoch - 1)
      img_s = m['steps'] * self.batch_size / max(per_epoch, 1e-9)
      logging.info('round %d/%d epoch %d/%d  loss %.4f  train_acc %.3f  lr %.4g  '
                   '%.1f steps/s (%.0f img/s incl. pool scoring)  ETA round %s',
                   round_, self.rounds - 1, epoch + 1, self.epochs, m['loss'],
                   m['train_accuracy'], m['learning_rate'], m['steps'] / max(per_epoch, 1e-9),
                   img_s, _fmt_seconds(eta))

  def on_round(self, state, round_: int) -> None:
    self.writer.write_scalars(int(state.num_labeled[round_]),
                              {'al/test_accuracy': float(state.test_accuracy[round_])})
    self.writer.flush()

  def close(self) -> None:
    self.writer.close()


def _fmt_seconds(s: float) -> str:
  if not math.isfinite(s):
    return '?'
  s = int(s)
  return f'{s // 3600}h{s % 3600 // 60:02d}m' if s >= 3600 else f'{s // 60}m{s % 60:02d}s'
