"""Orbax checkpoints: the AL state after every round and the training state inside a round.

``<checkpoints>/rounds/<r>``: ``ALState`` once ``r`` rounds are complete (the labeled
  mask stamped with the round each label arrived in, the key, per-round metrics).
``<checkpoints>/train/<step>``: the in-round training state (params, batch stats,
  optimizer, epoch), the prediction history and the running record statistics (training
  dynamics, ``train.STATS``), every ``checkpoint.every_epochs`` epochs, with
  ``step = round * (epochs + 1) + epoch`` so a restart continues mid-round.

``<checkpoints>`` is ``<workdir>/checkpoints`` unless ``checkpoint.dir`` names another folder.
Orbax writes each step to a temporary directory and renames it when complete, so a process
killed mid-write leaves only an ignored temporary directory; ``latest_step`` never sees it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath


def _abstract(tree):
  """ShapeDtypeStructs (with shardings for device arrays) describing ``tree``."""
  def one(x):
    if isinstance(x, jax.Array):
      return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
    return np.zeros(np.shape(x), np.asarray(x).dtype)  # numpy leaves restore as numpy
  return jax.tree.map(one, tree)


class Checkpointer:
  """Saves and restores round and in-round state under ``<workdir>/checkpoints``."""

  def __init__(self, root: str, epochs: int, every_epochs: int):
    """``root``: the checkpoint folder (``<workdir>/checkpoints`` or ``checkpoint.dir``; a
    ``gs://`` path works: orbax writes to GCS natively, from every process of a multi-host run)."""
    root = epath.Path(root)
    self.epochs, self.every_epochs = epochs, every_epochs
    self.rounds = ocp.CheckpointManager(
        root / 'rounds', options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True))
    self.train = ocp.CheckpointManager(
        root / 'train', options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True))

  # ---- rounds ---------------------------------------------------------------------------------

  def save_round(self, al_state, meta: dict) -> None:
    step = int(al_state.round)
    self.rounds.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(al_state), meta=ocp.args.JsonSave(meta)), force=True)
    self.rounds.wait_until_finished()

  def latest_round(self, like):
    """(ALState, meta) of the newest complete round checkpoint, or None."""
    step = self.rounds.latest_step()
    if step is None:
      return None
    out = self.rounds.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(_abstract(like)), meta=ocp.args.JsonRestore()))
    return out['state'], out['meta']

  def round_meta(self):
    """The JSON metadata of the newest round checkpoint (config of the run), or None."""
    step = self.rounds.latest_step()
    if step is None:
      return None
    return self.rounds.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']

  # ---- in-round training ----------------------------------------------------------------------

  def _step(self, round_: int, epoch: int) -> int:
    return round_ * (self.epochs + 1) + epoch

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
    out = self.train.restore(step, args=ocp.args.Composite(
        train=ocp.args.StandardRestore(_abstract(like))))['train']
    return (out['state'], out.get('history', like_history),
            dict(out.get('stats', like_stats or {})))

  def wait(self) -> None:
    self.train.wait_until_finished()
    self.rounds.wait_until_finished()

  def close(self) -> None:
    self.train.close()
    self.rounds.close()
