"""A run's results in its workdir: results.json, selections.jsonl, learning_curve.png, summary.

All files are derived from ``ALState`` (plus the config and dataset), so they are always
consistent with the newest round checkpoint, and they are written with
:func:`jaxdisp.files.atomic_write` (the workdir may be a ``gs://`` path): a process killed
mid-write leaves the previous version, never a torn file. Progress lines and TensorBoard are
:mod:`jaxdisp.progress`.
"""

from __future__ import annotations

import io
import json
import os

import numpy as np

from jaxdisp import files
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
  """(Re)writes learning_curve.png, selections.jsonl and results.json from ``state``.

  results.json goes last, so one that already holds exactly this state's document means the
  other two were written before it: then nothing is written at all (a finished run's rerun
  needs no write, and works in a read-only workdir). ``before_replace``: passed to
  :func:`atomic_write` (the crash tests' fault point).
  """
  path = os.path.join(workdir, 'results.json')
  text = json.dumps(results(cfg, dataset, state), indent=1) + '\n'
  try:
    if files.read_text(path) == text:
      return
  except (OSError, UnicodeDecodeError):
    pass  # not there yet (or unreadable): write it
  plot_learning_curve(os.path.join(workdir, 'learning_curve.png'), state,
                      f'{dataset.name} / {cfg.strategy} / seed {cfg.seed}')
  atomic_write(os.path.join(workdir, 'selections.jsonl'),
               ''.join(json.dumps(s) + '\n' for s in selections(dataset, state)), before_replace)
  atomic_write(path, text, before_replace)


def summary(state) -> str:
  lines = ['round  labeled  test_acc  balanced  train_s  score_s']
  for r in range(int(state.round)):
    per_class = state.class_accuracy[r]
    per_class = per_class[np.isfinite(per_class)]
    balanced = f'{100 * per_class.mean():7.2f}%' if per_class.size else '       -'
    lines.append(f'{r:5d}  {int(state.num_labeled[r]):7d}  {100 * state.test_accuracy[r]:7.2f}%'
                 f'  {balanced}  {state.seconds[r, 0]:7.1f}  {state.seconds[r, 1]:7.1f}')
  return '\n'.join(lines)
