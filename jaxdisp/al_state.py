"""The active-learning experiment's state: :class:`ALState`, a small pytree of host arrays.

* ``labeled_round[i]``: ``-1`` while training sample ``i`` is unlabeled, else the round whose
  model was the first to train on it (``0`` = the initial set, ``r + 1`` = queried in round
  ``r``). So the ids selected in round ``r`` are ``labeled_round == r + 1``.
* ``score``, ``modal_label``, ``label_changes``: for each queried sample, its acquisition score
  and (when a prediction history was recorded) its modal predicted label and number of label
  changes across epochs; ``nan`` / ``-1`` elsewhere.
* per-round metrics ``num_labeled``, ``test_accuracy``, ``class_accuracy`` (test accuracy of
  each true class), ``seconds`` (train, score, select).

It is what a round checkpoint holds (``jaxdisp.checkpointing``) and what ``jaxdisp.rounds``
advances by one round.
"""

from __future__ import annotations

import flax
import jax
import numpy as np


@flax.struct.dataclass
class ALState:
  round: np.ndarray  # int32 scalar: the next round to run
  key: np.ndarray  # uint32 [2]: the experiment's root PRNG key (raw)
  labeled_round: np.ndarray  # int32 [N_train]
  score: np.ndarray  # float32 [N_train]
  modal_label: np.ndarray  # int32 [N_train]
  label_changes: np.ndarray  # int32 [N_train]
  num_labeled: np.ndarray  # int32 [rounds + 1]
  test_accuracy: np.ndarray  # float32 [rounds + 1], nan = not run
  seconds: np.ndarray  # float32 [rounds + 1, 3]: train, score, select
  class_accuracy: np.ndarray  # float32 [rounds + 1, C], nan = not run / no test sample

  def selected(self, round_: int) -> np.ndarray:
    """Dataset ids queried at the end of ``round_`` (sorted)."""
    return np.flatnonzero(self.labeled_round == round_ + 1)


def initial_state(seed: int, num_train: int, initial_size: int, rounds: int,
                  num_classes: int = 1) -> ALState:
  """Round 0: a keyed uniformly random initial labeled set."""
  key = jax.random.PRNGKey(seed)
  perm = np.asarray(jax.random.permutation(jax.random.fold_in(key, 10**6), num_train))
  labeled_round = np.full(num_train, -1, np.int32)
  labeled_round[perm[:initial_size]] = 0
  return ALState(
      round=np.int32(0), key=np.asarray(key, np.uint32), labeled_round=labeled_round,
      score=np.full(num_train, np.nan, np.float32),
      modal_label=np.full(num_train, -1, np.int32),
      label_changes=np.full(num_train, -1, np.int32),
      num_labeled=np.zeros(rounds + 1, np.int32),
      test_accuracy=np.full(rounds + 1, np.nan, np.float32),
      seconds=np.zeros((rounds + 1, 3), np.float32),
      class_accuracy=np.full((rounds + 1, max(num_classes, 1)), np.nan, np.float32))


def is_finished(state: ALState, cfg) -> bool:
  return int(state.round) > cfg.al.rounds
