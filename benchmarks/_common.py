"""Helpers shared by the benchmark scripts (not a benchmark itself).

Every script is run as ``python benchmarks/<name>.py [--quick] [--out DIR]``, writes
``<out>/<name>[_quick].json`` (with the machine it ran on) and prints a table. Timings are taken
after a warm-up call (compilation excluded), with ``jax.block_until_ready``, and reported as
medians; where two things are compared (e.g. a model-only ceiling against the real trainer) their
repetitions are interleaved so that load from other processes on a shared machine hits both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, 'results')
if REPO not in sys.path:
  sys.path.insert(0, REPO)

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')


def parser(doc: str) -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=doc.strip().splitlines()[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--quick', action='store_true', help='tiny sizes (smoke test, seconds)')
  p.add_argument('--out', default=RESULTS,
                 help='directory for the JSON result (default: %(default)s)')
  return p


def machine_info() -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  info = {'platform': platform.platform(), 'processor': platform.processor() or platform.machine(),
          'cpu_count': os.cpu_count(), 'python': platform.python_version(),
          'jax': jax.__version__, 'backend': jax.default_backend(),
          'devices': [str(d) for d in jax.devices()],
          'xla_flags': os.environ.get('XLA_FLAGS', ''),
          'compilation_cache_dir': os.environ.get('JAX_COMPILATION_CACHE_DIR', ''),
          'load_average_at_start': list(os.getloadavg()) if hasattr(os, 'getloadavg') else None}
  try:
    with open('/proc/cpuinfo') as f:
      names = [l.split(':', 1)[1].strip() for l in f if l.startswith('model name')]
    if names:
      info['cpu_model'] = names[0]
  except OSError:
    pass
  for mod in ('jaxlib', 'flax', 'optax'):
    try:
      info[mod] = __import__(mod).__version__
    except Exception:  # pylint: disable=broad-except
      pass
  return info


def block(x):
  import jax  # pylint: disable=g-import-not-at-top
  return jax.block_until_ready(x)


def timeit(fn: Callable[[], object]) -> float:
  """Seconds for one call of ``fn`` including the wait for its device results."""
  t0 = time.perf_counter()
  block(fn())
  return time.perf_counter() - t0


def median(xs):
  xs = sorted(xs)
  n = len(xs)
  return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])


def interleaved(fns: dict[str, Callable[[], object]], reps: int, warmup: int = 1) -> dict:
  """Times each ``fns[name]()`` ``reps`` times, round-robin; ``{name: {median, min, runs}}``."""
  for _ in range(warmup):
    for fn in fns.values():
      block(fn())
  runs = {name: [] for name in fns}
  for _ in range(reps):
    for name, fn in fns.items():
      runs[name].append(timeit(fn))
  return {name: {'median': median(r), 'min': min(r), 'runs': r} for name, r in runs.items()}


def write_json(out: str, name: str, quick: bool, result: dict) -> str:
  """Writes ``<out>/<name>[_quick].json`` atomically; returns the path."""
  from jaxdisp import files  # pylint: disable=g-import-not-at-top
  path = os.path.join(out, f'{name}_quick.json' if quick else f'{name}.json')
  files.atomic_write(path, json.dumps(result, indent=1, default=_jsonable))
  return path


def _jsonable(x):
  try:
    import numpy as np  # pylint: disable=g-import-not-at-top
    if isinstance(x, np.generic):
      return x.item()
    if isinstance(x, np.ndarray):
      return x.tolist()
  except ImportError:
    pass
  return str(x)


def table(headers, rows) -> str:
  """A plain right-aligned text table."""
  cells = [[str(h) for h in headers]] + [[_fmt(c) for c in r] for r in rows]
  widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
  lines = ['  '.join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
  lines.insert(1, '  '.join('-' * w for w in widths))
  return '\n'.join(lines)


def _fmt(c) -> str:
  if isinstance(c, float):
    if c != c:  # nan
      return '-'
    if abs(c) >= 100:
      return f'{c:.0f}'
    if abs(c) >= 1:
      return f'{c:.2f}'
    return f'{c:.3g}'
  return '-' if c is None else str(c)


# The demo config shrunk to seconds (the TINY dict of tests/_helpers.py).
TINY = {
    'dataset.num_train': 600, 'dataset.num_test': 200, 'dataset.image_size': 16,
    'model.width': 8, 'train.epochs': 6, 'train.batch_size': 32, 'train.eval_batch_size': 128,
    'al.initial_size': 100, 'al.budget': 50, 'al.rounds': 2, 'checkpoint.every_epochs': 2,
    'log.progress_seconds': 0.0,
}


def demo_config(overrides: dict):
  """``configs/demo.py`` with dotted-key overrides applied."""
  from jaxdisp import cli  # pylint: disable=g-import-not-at-top
  cfg = cli.load_config(os.path.join(REPO, 'configs', 'demo.py'))
  set_keys(cfg, overrides)
  return cfg


def set_keys(cfg, overrides: dict):
  from jaxdisp import config_lib  # pylint: disable=g-import-not-at-top
  for key, value in overrides.items():
    config_lib.set_key(cfg, key, value)
  return cfg


def free_port() -> int:
  """A TCP port on localhost that is free now (for a jax.distributed coordinator)."""
  import socket  # pylint: disable=g-import-not-at-top
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def add_xla_flag(flag: str) -> None:
  """Appends ``flag`` to ``XLA_FLAGS`` (effective only before jax initialises a backend)."""
  flags = os.environ.get('XLA_FLAGS', '').split()
  if flag not in flags:
    os.environ['XLA_FLAGS'] = ' '.join(flags + [flag])


def quiet_logs():
  """absl INFO lines (progress, orbax) would drown the tables."""
  from absl import logging  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)
