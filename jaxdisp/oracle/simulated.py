"""The simulated oracle (``oracle.kind='simulated'``): the dataset's labels, with mistakes."""

from __future__ import annotations

import numpy as np


def noisy_answers(cfg, labels: np.ndarray, num_classes: int) -> np.ndarray:
  """:func:`simulated_answers` at ``cfg.oracle.noise``, and ``cfg.oracle.noise_initial`` on the
  run's initial set (``al_state.initial_state`` of ``cfg.seed``)."""
  from jaxdisp.al_state import initial_state  # pylint: disable=g-import-not-at-top
  first = initial_state(cfg.seed, len(labels), cfg.al.initial_size, cfg.al.rounds)
  return simulated_answers(labels, num_classes, cfg.oracle.noise, cfg.seed,
                           initial=first.labeled_round == 0,
                           noise_initial=cfg.oracle.noise_initial)


def simulated_answers(labels: np.ndarray, num_classes: int, noise: float, seed: int,
                      initial=None, noise_initial: float | None = None) -> np.ndarray:
  """The simulated oracle's label for every training sample: the dataset's label, or with
  probability ``noise`` (``oracle.noise``) a uniformly random other class. Keyed by ``seed``
  alone, so every strategy of a seed hears the same answers for the same sample.

  ``initial`` (a boolean mask or ids) names the initial labeled set, whose labels are wrong with
  probability ``noise_initial`` (``oracle.noise_initial``) instead, drawn from a stream of their
  own: by default (0) the initial set is clean and only queried labels are noisy. Without
  ``initial``, or with ``noise_initial == noise``, every label gets ``noise`` from the one stream
  (the answers of versions before ``oracle.noise_initial``, bit for bit). The queried labels'
  mistakes are the same whatever ``noise_initial`` is.
  """
  labels = np.asarray(labels, np.int64)
  if noise_initial is not None and float(noise_initial) == float(noise):
    initial = None  # one rate for every label: the single stream
  n = len(labels)
  rate = np.full(n, float(noise))
  if initial is not None:
    mask = np.zeros(n, bool)
    mask[np.asarray(initial)] = True
    rate[mask] = float(noise_initial or 0.0)
  if not (rate > 0).any():
    return labels.astype(np.int32)
  rng = np.random.default_rng((int(seed), 0x4E4F4953))  # 'NOIS': the queried labels' mistakes
  wrong = rng.random(n) < rate
  other = (labels + rng.integers(1, num_classes, n)) % num_classes
  if initial is not None:  # the initial set's own stream: its mistakes do not move the others'
    init = np.random.default_rng((int(seed), 0x494E4954))  # 'INIT'
    wrong_init = init.random(n) < rate
    other_init = (labels + init.integers(1, num_classes, n)) % num_classes
    wrong = np.where(mask, wrong_init, wrong)
    other = np.where(mask, other_init, other)
  return np.where(wrong, other, labels).astype(np.int32)
