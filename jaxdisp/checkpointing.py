"""Orbax checkpoints: the AL state after every round and the training state inside a round.

``<checkpoints>/rounds/<r>``: ``ALState`` once ``r`` rounds are complete (the labeled
  mask stamped with the round each label arrived in, the key, per-round metrics).
``<checkpoints>/train/<step>``: the in-round training state (params, batch stats,
  optimizer, epoch; a deep ensemble's: every member's, stacked), the prediction history and the running record statistics (training
  dynamics, ``train.STATS``), every ``checkpoint.every_epochs`` epochs, with
  ``step = round * (epochs + 1) + epoch`` so a restart continues mid-round.

``<checkpoints>`` is ``<workdir>/checkpoints`` unless ``checkpoint.dir`` names another folder.
Orbax writes each step to a temporary directory and renames it when complete, so a process
killed mid-write leaves only an ignored temporary directory; ``latest_step`` never sees it.

A complete checkpoint can still be damaged afterwards (a file deleted, truncated or overwritten;
a disk error). Round checkpoints carry a SHA-256 of the state in their metadata. A round
checkpoint that cannot be read, or does not match its checksum, is reported (which step, which
file), moved to ``<checkpoints>/damaged/`` and the newest intact one (orbax keeps two) is used:
the rounds after it are computed again, to the same results. A damaged in-round training
checkpoint is reported and set aside the same way, and its round starts from epoch 0.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import json
import logging as logging_std
import re
import sys
import time

import flax
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from jaxdisp import storage


def _abstract(tree):
  """ShapeDtypeStructs (with shardings for device arrays) describing ``tree``."""
  def one(x):
    if isinstance(x, jax.Array):
      return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
    return np.zeros(np.shape(x), np.asarray(x).dtype)  # numpy leaves restore as numpy
  return jax.tree.map(one, tree)


def state_digest(tree) -> str:
  """SHA-256 of a pytree of host arrays (an ``ALState`` or the plain dict orbax restores it as),
  over its leaves by name: the same for both."""
  flat = flax.traverse_util.flatten_dict(flax.serialization.to_state_dict(tree), sep='/')
  h = hashlib.sha256()
  for name in sorted(flat):
    a = np.ascontiguousarray(np.asarray(flat[name]))
    h.update(f'{name}\0{a.dtype.str}\0{a.shape}\0'.encode())
    h.update(a.tobytes())
  return h.hexdigest()


class _LeftoverReadErrors(logging_std.Filter):
  """Drops asyncio's "Task exception was never retrieved" records about files under a checkpoint
  folder being read: orbax leaves such tasks behind when a restore fails part-way, and asyncio
  logs them whenever the task is garbage-collected (during the read or any time after it). The
  damage is reported once, by :class:`Checkpointer`, as one warning line; asyncio records about
  anything else are passed on."""

  def __init__(self):
    super().__init__()
    self.roots: set[str] = set()

  def filter(self, record) -> bool:
    text = record.getMessage()
    if record.exc_info and record.exc_info[1] is not None:
      text += str(record.exc_info[1])
    return not ('never retrieved' in text and any(root in text for root in self.roots))


_LEFTOVERS = _LeftoverReadErrors()
logging_std.getLogger('asyncio').addFilter(_LEFTOVERS)


@contextlib.contextmanager
def _quiet_failed_reads():
  """Drops the "RuntimeError: Event loop is closed" tracebacks that orbax's asyncio reads leave
  behind (through ``sys.unraisablehook``) when a restore fails part-way, collecting the garbage
  of the read before it ends so that they surface here: the damage is reported once, as one
  warning line. Every other unraisable exception is passed on. (asyncio's logged leftovers:
  :class:`_LeftoverReadErrors`.)"""
  previous = sys.unraisablehook

  def hook(info):
    if not (isinstance(info.exc_value, RuntimeError)
            and 'Event loop is closed' in str(info.exc_value)):
      previous(info)
  sys.unraisablehook = hook
  try:
    yield
  finally:
    gc.collect()
    sys.unraisablehook = previous


_JSON_FILES = ('_CHECKPOINT_METADATA', '_METADATA', 'metadata')



def describe_damage(step_dir: epath.Path, root: epath.Path, errors) -> str:
  """Which file of ``step_dir`` is damaged and how, from the restore ``errors`` (exceptions or
  strings) or, where they name no file, by reading its JSON files; paths relative to ``root``."""
  def rel(path) -> str:
    path = str(path)
    return path[len(str(root)):].lstrip('/') if path.startswith(str(root)) else path
  for e in errors:
    if isinstance(e, str):
      return e
    text = str(e)
    code = re.match(r'([A-Z_]{4,}):', text)  # tensorstore status: NOT_FOUND, DATA_LOSS, ...
    how = ('missing' if isinstance(e, FileNotFoundError) or (code and code[1] == 'NOT_FOUND')
           else f'unreadable ({code[1] if code else type(e).__name__})')
    item = re.search(r'Item "([^"]+)" was not found', text)  # a whole item folder is gone
    if item:
      return f'{rel(step_dir / item[1])} is missing'
    named = [p.rstrip('.:,\\') for p in
             re.findall(re.escape(str(step_dir)) + r'/[^"\'\s\]]+', text)]
    named = [p for p in named if not p.endswith('/') and not epath.Path(p).is_dir()]
    if named:
      return f'{rel(max(named, key=len))} is {how}'
  try:  # no file named: look for a missing or unreadable metadata file
    items = sorted(p for p in step_dir.iterdir() if p.is_dir())
    for path in sorted([*step_dir.iterdir(), *(p for i in items for p in i.iterdir())]):
      if path.name in _JSON_FILES:
        try:
          json.loads(path.read_text())
        except Exception:  # pylint: disable=broad-except
          return f'{rel(path)} is not valid JSON'
    for item in items:
      if not (item / '_METADATA').exists() and not (item / 'metadata').exists():
        return f'{rel(item)}/_METADATA is missing'
      if (item / 'd').is_dir() and not (item / 'manifest.ocdbt').exists():
        return f'{rel(item)}/manifest.ocdbt is missing'
  except OSError as e:
    return f'{rel(step_dir)} is unreadable ({e.strerror or e})'
  e = errors[0]
  first = (str(e).splitlines() or [''])[0][:200]
  return f'{rel(step_dir)} is unreadable ({type(e).__name__}: {first})'


class Checkpointer:
  """Saves and restores round and in-round state under ``<workdir>/checkpoints``."""

  @storage.refused_writes_as_one_line
  def __init__(self, root: str, epochs: int, every_epochs: int):
    """``root``: the checkpoint folder (``<workdir>/checkpoints`` or ``checkpoint.dir``; a
    ``gs://`` path works: orbax writes to GCS natively, from every process of a multi-host run)."""
    root = epath.Path(root)
    self.root = root
    _LEFTOVERS.roots.add(str(root))
    self.epochs, self.every_epochs = epochs, every_epochs
    self.rounds = ocp.CheckpointManager(
        root / 'rounds', options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True))
    self.train = ocp.CheckpointManager(
        root / 'train', options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True))

  # ---- rounds ---------------------------------------------------------------------------------

  @storage.refused_writes_as_one_line
  def save_round(self, al_state, meta: dict) -> None:
    step = int(al_state.round)
    meta = {**meta, 'state_sha256': state_digest(al_state)}
    self.rounds.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(al_state), meta=ocp.args.JsonSave(meta)), force=True)
    self.rounds.wait_until_finished()

  def latest_round(self, like):
    """(ALState, meta) of the newest intact round checkpoint, or None.

    A damaged newer one is reported, set aside and skipped (see the module docstring). A
    checkpoint that is intact but does not fit ``like`` (a config changed under resume_force)
    raises the restore error (ValueError/TypeError), as before.
    """
    damaged = []
    with _quiet_failed_reads():
      for step in sorted(self.rounds.all_steps(), reverse=True):
        out, problem = self._read_round(step, like)
        if out is not None:
          break
        damaged.append((step, problem))
      else:
        out, step = None, None
    for bad, problem in damaged:
      where = self._set_aside(self.rounds, 'rounds', bad)
      logging.warning('round checkpoint %d (the state after round %d) is damaged: %s; %s; '
                      'moved it to %s', bad, bad - 1, problem,
                      f'falling back to round checkpoint {step} (after round {step - 1})'
                      if step is not None else
                      'no intact round checkpoint is left: starting from round 0', where)
    return out

  def _read_round(self, step: int, like):
    """((state, meta), None) if round checkpoint ``step`` is intact, else (None, what is wrong)."""
    try:
      out = self.rounds.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(_abstract(like)), meta=ocp.args.JsonRestore()))
    except Exception as e:  # pylint: disable=broad-except
      problem = self._round_problem(step, e)
      if problem is None:
        upgraded = self._read_older_version(step, like)
        if upgraded is not None:
          return upgraded, None
        raise  # readable and intact: it does not fit this config
      return None, problem
    want = (out['meta'] or {}).get('state_sha256')  # absent in checkpoints of older versions
    if want and state_digest(out['state']) != want and self._round_problem(step) is not None:
      return None, ('its arrays do not match the SHA-256 saved with them (a data file under '
                    f'rounds/{step}/state was altered)')
    return (out['state'], out['meta']), None

  def _read_older_version(self, step: int, like):
    """(state, meta) of a checkpoint written before ``like`` gained fields (e.g.
    ``class_accuracy``): the fields it has, with their shapes, and ``like``'s for the rest;
    None if it holds anything else."""
    out = self.rounds.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
    saved, fields = out['state'], {f.name for f in dataclasses.fields(like)}
    if not isinstance(saved, dict) or not set(saved) < fields:
      return None
    values = {}
    for name, value in saved.items():
      want = getattr(like, name)
      if np.shape(value) != np.shape(want):
        return None
      values[name] = np.asarray(value).astype(np.asarray(want).dtype)
    logging.info('round checkpoint %d was written by an older version (no %s): upgraded',
                 step, ', '.join(sorted(fields - set(saved))))
    return like.replace(**values), out['meta']

  def _round_problem(self, step: int, first_error=None):
    """None if round checkpoint ``step`` reads as saved (no target) and matches its checksum,
    else a description of the damage."""
    try:
      out = self.rounds.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
    except Exception as e:  # pylint: disable=broad-except
      errors = [e] if first_error is None else [first_error, e]
      return describe_damage(self.rounds.directory / str(step), self.root, errors)
    want = (out['meta'] or {}).get('state_sha256')
    if want and state_digest(out['state']) != want:
      return (f'its arrays do not match the SHA-256 saved with them (a data file under '
              f'rounds/{step}/state was altered)')
    return None

  def round_meta(self):
    """The JSON metadata (config of the run) of the newest round checkpoint whose metadata
    reads, or None; damage is reported by :meth:`latest_round`."""
    for step in sorted(self.rounds.all_steps(), reverse=True):
      try:
        meta = self.rounds.restore(step, args=ocp.args.Composite(
            meta=ocp.args.JsonRestore()))['meta']
      except Exception:  # pylint: disable=broad-except
        continue
      if isinstance(meta, dict) and 'config' in meta:
        return meta
    return None

  def _set_aside(self, manager, kind: str, step: int) -> str:
    """Moves step ``step`` of ``manager`` to ``<root>/damaged/<kind>-<step>-<time>`` (process 0,
    then every process re-reads the steps); deletes it where it cannot be moved."""
    src = manager.directory / str(step)
    dst = self.root / 'damaged' / f'{kind}-{step}-{time.strftime("%Y%m%d-%H%M%S")}'
    where = str(dst)
    if jax.process_index() == 0:
      try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        src.rename(dst)
      except Exception:  # pylint: disable=broad-except  (e.g. a store without directory renames)
        src.rmtree(missing_ok=True)
        where = 'nowhere: deleted, it could not be moved'
    ocp.multihost.sync_global_processes(f'jaxdisp_set_aside_{kind}_{step}')
    manager.wait_until_finished()
    manager.reload()
    return where

  # ---- in-round training ----------------------------------------------------------------------

  def _step(self, round_: int, epoch: int) -> int:
    return round_ * (self.epochs + 1) + epoch

  @storage.refused_writes_as_one_line
  def maybe_save_train(self, round_: int, epoch: int, train_state, history,
                       force: bool = False, stats: dict | None = None) -> bool:
    """Saves if ``epoch`` (epochs completed) is on the interval (or ``force``), not the last.

    ``stats``: the round's running record statistics (``{field: [P]}``), saved with the
    history so that a resumed round continues them bit for bit.
    """
    if epoch >= self.epochs or (epoch % self.every_epochs and not force):
      return False
    tree = {'state': train_state}
    if history.size:  # baselines keep no history (orbax refuses zero-size arrays)
      tree['history'] = history
    if stats:
      tree['stats'] = dict(stats)
    # Orbax copies device arrays to the host in the background, while the next epoch donates
    # (overwrites in place) the state and the history: hand it private device copies.
    tree = jax.tree.map(lambda x: jnp.copy(x) if isinstance(x, jax.Array) else x, tree)
    self.train.save(self._step(round_, epoch), args=ocp.args.Composite(
        train=ocp.args.StandardSave(tree),
        meta=ocp.args.JsonSave({'round': round_, 'epoch': epoch})), force=True)
    return True

  def restore_train(self, round_: int, like_state, like_history, like_stats=None):
    """(train_state, history, stats) saved mid-way through ``round_``, or None."""
    step = self.train.latest_step()
    if step is None or not (self._step(round_, 0) < step < self._step(round_ + 1, 0)):
      return None
    like = {'state': like_state}
    if like_history.size:
      like['history'] = like_history
    if like_stats:
      like['stats'] = dict(like_stats)
    try:
      with _quiet_failed_reads():
        out = self.train.restore(step, args=ocp.args.Composite(
            train=ocp.args.StandardRestore(_abstract(like))))['train']
    except Exception as e:  # pylint: disable=broad-except  (damaged, or saved for another shape)
      problem = describe_damage(self.train.directory / str(step), self.root, [e])
      where = self._set_aside(self.train, 'train', step)
      logging.warning('training checkpoint %d (round %d, epoch %d) cannot be restored: %s; '
                      'starting round %d from epoch 0; moved it to %s', step, round_,
                      step - self._step(round_, 0), problem, round_, where)
      return None
    return (out['state'], out.get('history', like_history),
            dict(out.get('stats', like_stats or {})))

  @storage.refused_writes_as_one_line
  def wait(self) -> None:
    self.train.wait_until_finished()
    self.rounds.wait_until_finished()

  def close(self) -> None:
    self.train.close()
    self.rounds.close()

  def finish(self) -> None:
    """Waits for pending writes (raising their errors) and closes, whatever happens."""
    try:
      self.wait()
    finally:
      try:
        self.close()
      except Exception:  # pylint: disable=broad-except  (a write error was raised by wait)
        pass
