"""The step loop: ``carry = step(i, carry, *consts)`` for ``i < num_steps``, on device or from
the host. The task model's epochs (single model and members) and VAAL's training share it.

* ``device`` (TPU/GPU): one compiled ``fori_loop`` (:func:`on_device`, called inside jit; the
  trip count may be traced), so an epoch is one compiled call.
* ``host`` (CPU): each step is its own compiled call, dispatched asynchronously from Python
  (:func:`on_host`); nothing but the step count is read back. XLA:CPU runs convolution
  gradients 10-40x slower inside a loop (jax-ml/jax#12868).

``train.step_loop`` picks one (``auto``: host on CPU). An epoch of the task model is
``begin``, the step loop over its batches, ``end``: :func:`epoch_on_device` /
:func:`epoch_on_host` compose them for the single model's functions (``steps.py``,
``recording.epoch_end``) or the members' (``members.py``).
"""

from __future__ import annotations

import functools
import math
import time
from typing import Callable

import jax
import jax.numpy as jnp
from absl import logging
from jax.sharding import Mesh

from jaxdisp import preemption

Array = jax.Array


def on_device(step: Callable, num_steps: Array, carry, *consts, start: Array | int = 0):
  """``step(i, carry, *consts)`` for ``start <= i < num_steps`` in one ``fori_loop`` (inside
  jit)."""
  return jax.lax.fori_loop(start, num_steps, lambda i, c: step(i, c, *consts), carry)


def jit_step(step: Callable) -> Callable:
  """``step`` compiled for :func:`on_host`: its carry (argument 1) donated, updated in place.
  (The compiled function keeps ``step``'s name, which the compile counter reports.)"""
  return jax.jit(step, donate_argnums=(1,))


def waits_for_each_step(mesh: Mesh) -> bool:
  """Several (simulated) CPU devices: wait for each step before dispatching the next. With
  several collective programs in flight on busy cores, XLA:CPU's rendezvous can deadlock."""
  return mesh.devices.flat[0].platform == 'cpu' and mesh.size > 1


def on_host(step: Callable, num_steps: int, carry, *consts, mesh: Mesh,
            after: Callable[[int, object], None] | None = None):
  """``step`` (a :func:`jit_step`) for ``i < num_steps``, one compiled call each; ``after(i +
  1, carry)`` once each is dispatched (a :class:`Heartbeat`)."""
  one_at_a_time = waits_for_each_step(mesh)
  for i in range(num_steps):
    carry = step(jnp.int32(i), carry, *consts)
    if one_at_a_time:
      jax.block_until_ready(carry)
    if after is not None:
      after(i + 1, carry)
  return carry


def in_chunks(run: Callable, num_steps: int, carry, chunk: int,
              after: Callable[[int, object], None]):
  """``carry = run(carry, start, stop)`` over ``[0, num_steps)`` in chunks of ``chunk`` steps
  (one compiled :func:`on_device` loop each, the same steps as one loop over all), waiting for
  each and calling ``after(stop, carry)``: a long loop on device stays answerable."""
  for start in range(0, num_steps, chunk):
    stop = min(start + chunk, num_steps)
    carry = jax.block_until_ready(run(carry, jnp.int32(start), jnp.int32(stop)))
    after(stop, carry)
  return carry


class Heartbeat:
  """Between the steps of a long training that keeps no checkpoint (a strategy's auxiliary
  model at scoring time): honours a stop request (:func:`jaxdisp.preemption.check`; the rerun
  computes the training again) and logs a progress line every ``interval`` seconds and at the
  end. ``describe(carry)`` adds e.g. the current losses (it may wait for the device)."""

  def __init__(self, what: str, total: int, interval: float,
               describe: Callable[[object], str] | None = None):
    self.what, self.total, self.interval, self.describe = what, total, interval, describe
    self._start = self._last = time.perf_counter()

  def __call__(self, done: int, carry) -> None:
    preemption.check(f'during {self.what} (step {done} of {self.total})')
    now = time.perf_counter()
    if now - self._last < self.interval and done < self.total:
      return
    self._last = now
    rate = done / max(now - self._start, 1e-9)
    eta = (self.total - done) / rate if rate > 0 else math.inf
    extra = f'  {self.describe(carry)}' if self.describe is not None else ''
    logging.info('%s: step %d/%d  %.1f steps/s  ETA %s%s', self.what, done, self.total, rate,
                 f'{eta:.0f}s' if math.isfinite(eta) else '?', extra)


def epoch_steps(num_labeled, batch_size: int):
  """``ceil(num_labeled / batch_size)`` optimizer steps (traced or a Python int)."""
  return (num_labeled + batch_size - 1) // batch_size


def epoch_on_device(fns: tuple[Callable, Callable, Callable], setup, state, history: Array,
                    stats: dict, data, labeled: Array, num_labeled: Array, pool: Array,
                    num_pool: Array, key: Array):
  """``begin``, ``step`` x the epoch's batches (:func:`on_device`), ``end``: one epoch of the
  single model or of every member, traced into one program (call inside jit)."""
  begin, step, end = fns
  state, shuffled, (k_steps, k_pool), lr, sums = begin(setup, state, labeled, num_labeled, key)
  n = epoch_steps(num_labeled, setup.batch_size)
  state, sums = on_device(functools.partial(step, setup), n, (state, sums), data, shuffled,
                          num_labeled, k_steps)
  return end(setup, state, history, stats, sums, data, pool, num_pool, k_pool, lr, n)


def epoch_on_host(fns: tuple[Callable, Callable, Callable], setup) -> Callable:
  """:func:`epoch_on_device`'s epoch with the step loop in Python (:func:`on_host`): ``begin``,
  ``step`` and ``end`` compiled separately, dispatched asynchronously; the same signature."""
  begin_fn, step_fn, end_fn = fns
  begin = jax.jit(functools.partial(begin_fn, setup), donate_argnums=(0,))
  step = jit_step(functools.partial(step_fn, setup))
  end = jax.jit(functools.partial(end_fn, setup), donate_argnums=(0, 1, 2))

  def epoch(state, history, stats, data, labeled, num_labeled, pool, num_pool, key):
    n = epoch_steps(int(num_labeled), setup.batch_size)
    state, shuffled, (k_steps, k_pool), lr, sums = begin(state, labeled, num_labeled, key)
    state, sums = on_host(step, n, (state, sums), data, shuffled, num_labeled, k_steps,
                          mesh=setup.mesh)
    out = end(state, history, stats, sums, data, pool, num_pool, k_pool, lr, jnp.int32(n))
    if waits_for_each_step(setup.mesh):
      jax.block_until_ready(out)
    return out

  return epoch
