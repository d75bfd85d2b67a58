"""Outputs in the workdir: results.json, selections.jsonl, learning_curve.png, TensorBoard, progress.

All files are derived from ``ALState`` (plus the config and dataset), so they are always
consistent with the newest round checkpoint, and they are written with
:func:`jaxdisp.files.atomic_write`: a process killed mid-write leaves the previous version,
never a torn file.
"""

from __future__ import annotations

import io
import json
import math
import os
import time

import numpy as np
from absl import logging

from jaxdisp.files import atomic_write


def results(cfg, dataset, state) -> dict:
  """The ``results.json`` document: config and one entry per completed round."""
  rounds = []
  for r in range(int(state.round)):
    selected = state.selected(r)
    per_class = state.class_accuracy[r] if state.class_accuracy.shape[-1] else np.zeros(0)
    present = per_class[np.isfinite(per_class)]
    rounds.append({
        'round': r,
        'num_labeled': int(state.num_labeled[r]),
        'test_accuracy': float(state.test_accuracy[r]),
        # mean over the classes that have test samples of each class's accuracy
        'balanced_accuracy': float(present.mean()) if present.size else None,
        'class_accuracy': {name: (float(a) if np.isfinite(a) else None)
                           for name, a in zip(dataset.class_names, per_class)},
        'selected': [int(i) for i in selected],
        'seconds': dict(zip(('train', 'score', 'select'),
                            (round(float(s), 3) for s in state.seconds[r]))),
    })
  return {'config': cfg.to_dict(),
          'dataset': {'name': dataset.name, 'num_train': dataset.num_train,
                      'num_test': dataset.num_test, 'num_classes': dataset.num_classes,
                      'class_names': list(dataset.class_names)},
          'rounds': rounds}


def selections(dataset, state) -> list[dict]:
  """One record per queried sample, in round then dataset-id order."""
  out = []
  for r in range(int(state.round)):
    for i in state.selected(r):
      modal = int(state.modal_label[i])
      changes = int(state.label_changes[i])
      out.append({'round': r, 'id': int(i), 'file': dataset.train_ids[i],
                  'score': float(state.score[i]),
                  'modal_label': modal if modal >= 0 else None,
                  'modal_class': dataset.class_names[modal] if modal >= 0 else None,
                  'label_changes': changes if changes >= 0 else None})
  return out


def plot_learning_curve(path: str, state, title: str) -> None:
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  done = int(state.round)
  fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
  ax.plot(state.num_labeled[:done], 100 * state.test_accuracy[:done], 'o-')
  ax.set_xlabel('labeled samples')
  ax.set_ylabel('test accuracy (%)')
  ax.set_title(title, fontsize=9)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  buf = io.BytesIO()
  fig.savefig(buf, format='png')
  plt.close(fig)
  atomic_write(path, buf.getvalue())


def write_outputs(workdir: str, cfg, dataset, state, before_replace=None) -> None:
  """(Re)writes results.json, selections.jsonl and learning_curve.png from ``state``.

  ``before_replace``: passed to :func:`atomic_write` (the crash tests' fault point).
  """
  atomic_write(os.path.join(workdir, 'results.json'),
               json.dumps(results(cfg, dataset, state), indent=1) + '\n', before_replace)
  atomic_write(os.path.join(workdir, 'selections.jsonl'),
               ''.join(json.dumps(s) + '\n' for s in selections(dataset, state)), before_replace)
  plot_learning_curve(os.path.join(workdir, 'learning_curve.png'), state,
                      f'{dataset.name} / {cfg.strategy} / seed {cfg.seed}')


def summary(state) -> str:
  lines = ['round  labeled  test_acc  balanced  train_s  score_s']
  for r in range(int(state.round)):
    per_class = state.class_accuracy[r]
    per_class = per_class[np.isfinite(per_class)]
    balanced = f'{100 * per_class.mean():7.2f}%' if per_class.size else '       -'
    lines.append(f'{r:5d}  {int(state.num_labeled[r]):7d}  {100 * state.test_accuracy[r]:7.2f}%'
                 f'  {balanced}  {state.seconds[r, 0]:7.1f}  {state.seconds[r, 1]:7.1f}')
  return '\n'.join(lines)


class Progress:
  """Per-epoch TensorBoard scalars (TF-free event files) and periodic progress lines with ETA."""

  def __init__(self, workdir: str, cfg, total_rounds: int, write: bool = True):
    from jaxdisp import tensorboard_writer  # pylint: disable=g-import-not-at-top
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
    scalars = {'train/loss': m['loss'], 'train/accuracy': m['train_accuracy'],
               'train/learning_rate': m['learning_rate']}
    if math.isfinite(m.get('aux_loss', math.nan)):  # a strategy's auxiliary head (learning_loss)
      scalars['train/aux_loss'] = m['aux_loss']
    self.writer.write_scalars(step, scalars)
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
