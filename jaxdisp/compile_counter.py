"""Counts XLA compilations per jitted function (to prove that rounds do not recompile).

Uses ``jax.monitoring``'s backend-compile event, which fires once per real XLA compilation (a
C++ dispatch-cache entry for a new input layout that reuses an executable does not count).
"""

from __future__ import annotations

import collections
import threading

import jax

_BACKEND_COMPILE = '/jax/core/compile/backend_compile_duration'
_counts: collections.Counter = collections.Counter()
_lock = threading.Lock()
_registered = False


def _listener(event: str, duration: float, **kwargs) -> None:
  del duration
  if event == _BACKEND_COMPILE:
    with _lock:
      _counts[kwargs.get('fun_name', '?')] += 1


def enable() -> None:
  """Starts counting (idempotent)."""
  global _registered
  if not _registered:
    jax.monitoring.register_event_duration_secs_listener(_listener)
    _registered = True


def compile_counts() -> dict[str, int]:
  """``{function name: XLA compilations so far}``, e.g. ``{'train_epoch': 1}``."""
  with _lock:
    return {name.removeprefix('jit(').removesuffix(')'): n for name, n in _counts.items()}
