"""Shared test helpers: the tiny demo config, the CLI, and checks of a run's outputs."""

import json
import os
import subprocess
import sys
import threading
import time

from jaxdisp import config_lib
from jaxdisp.cli import load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The demo config shrunk to seconds: 600 synthetic 16x16 images, 6 epochs, 100 + 2 x 50 labels.
TINY = {
    'dataset.num_train': 600, 'dataset.num_test': 200, 'dataset.image_size': 16,
    'model.width': 8, 'train.epochs': 6, 'train.batch_size': 32, 'train.eval_batch_size': 128,
    'al.initial_size': 100, 'al.budget': 50, 'al.rounds': 2, 'checkpoint.every_epochs': 2,
    'log.progress_seconds': 0.0,
}


def tiny_config(**overrides):
  """``configs/demo.py`` shrunk by TINY, then ``overrides`` (dotted keys, Python values)."""
  cfg = load_config(os.path.join(REPO, 'configs', 'demo.py'))
  for key, value in {**TINY, **overrides}.items():
    config_lib.set_key(cfg, key, value)
  return cfg


def cli(workdir, *overrides, env=None, check=True, config='configs/demo.py'):
  """``python -m jaxdisp.main`` on ``config`` shrunk by TINY, then ``overrides``."""
  args = [sys.executable, '-m', 'jaxdisp.main', '--config', os.path.join(REPO, config),
          '--workdir', str(workdir)]
  args += [f'--config.{k}={v}' for k, v in TINY.items()] + list(overrides)
  proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600,
                        env={**os.environ, **(env or {})})
  if check and proc.returncode != 0:
    raise AssertionError(f'exit {proc.returncode}\n{proc.stderr[-3000:]}')
  return proc


def load_results(workdir):
  with open(os.path.join(workdir, 'results.json')) as f:
    return json.load(f)


def check_outputs(workdir, cfg):
  """results.json, selections.jsonl, TensorBoard events and the plot are all there and agree."""
  res = load_results(workdir)
  rounds = res['rounds']
  assert [r['round'] for r in rounds] == list(range(cfg.al.rounds + 1))
  labeled = cfg.al.initial_size
  seen = set()
  for r in rounds:
    assert r['num_labeled'] == labeled
    assert 0.0 <= r['test_accuracy'] <= 1.0
    assert set(r['seconds']) == {'train', 'score', 'select'}
    expected = cfg.al.budget if r['round'] < cfg.al.rounds else 0
    assert len(r['selected']) == len(set(r['selected'])) == expected
    assert not seen & set(r['selected'])
    seen |= set(r['selected'])
    labeled += expected
  with open(os.path.join(workdir, 'selections.jsonl')) as f:
    lines = [json.loads(line) for line in f]
  assert len(lines) == cfg.al.budget * cfg.al.rounds
  assert {l['id'] for l in lines} == seen
  assert set(lines[0]) >= {'round', 'id', 'score', 'modal_label', 'label_changes'}
  assert os.path.getsize(os.path.join(workdir, 'learning_curve.png')) > 1000
  events = os.listdir(os.path.join(workdir, 'tensorboard'))
  assert any(e.startswith('events.out.tfevents') for e in events)
  try:
    import tensorboard  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:  # the files' contents are checked where tensorboard is installed
    return res
  from test_lean_install import read_scalars  # pylint: disable=g-import-not-at-top
  scalars = read_scalars(os.path.join(workdir, 'tensorboard'))
  assert len(scalars['train/loss']) == len(rounds) * cfg.train.epochs
  assert [n for n, _ in scalars['al/test_accuracy']] == [r['num_labeled'] for r in rounds]
  assert all(abs(a - r['test_accuracy']) < 1e-6
             for (_, a), r in zip(scalars['al/test_accuracy'], rounds))
  return res


def strategy_config(path, name: str, body: str) -> str:
  """Writes a config file at ``path`` that runs ``body`` (Python defining and registering the
  strategy ``name``; ``strategies`` and ``jnp`` are imported) and starts from configs/demo.py
  with ``strategy=name``; returns its path."""
  text = ('import sys\nimport time\n\nimport jax.numpy as jnp\n\n'
          'from jaxdisp import cli, strategies\n\n' + body.strip() + '\n\n\n'
          'def get_config():\n'
          f'  config = cli.load_config({os.path.join(REPO, "configs", "demo.py")!r})\n'
          f'  config.strategy = {name!r}\n'
          '  return config\n')
  with open(path, 'w') as f:
    f.write(text)
  return str(path)


class Running:
  """A ``python -m jaxdisp.main`` run in the background whose stderr is collected; :meth:`wait`
  returns once a line containing ``marker`` appears."""

  def __init__(self, args, env=None):
    self.proc = subprocess.Popen([sys.executable, '-m', 'jaxdisp.main'] + list(args), cwd=REPO,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env={**os.environ, **(env or {})})
    self.lines, self._seen, self._marker = [], threading.Event(), None
    self._reader = threading.Thread(target=self._read, daemon=True)
    self._reader.start()

  def _read(self):
    for line in self.proc.stderr:
      self.lines.append(line)
      if self._marker is not None and self._marker in line:
        self._seen.set()

  def wait_for(self, marker: str, timeout: float = 300) -> None:
    self._marker = marker
    if any(marker in l for l in self.lines):
      return
    assert self._seen.wait(timeout), self.text[-3000:]

  def finish(self, signum=None, timeout: float = 60) -> tuple[int, float]:
    """Sends ``signum`` (if given), waits for the exit: (status, seconds from the signal)."""
    start = time.monotonic()
    if signum is not None:
      self.proc.send_signal(signum)
    code = self.proc.wait(timeout)
    self._reader.join(10)
    return code, time.monotonic() - start

  @property
  def text(self) -> str:
    return ''.join(self.lines)

  @property
  def last_line(self) -> str:
    return self.text.strip().splitlines()[-1]
