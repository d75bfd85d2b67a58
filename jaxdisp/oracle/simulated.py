"""The simulated oracle (``oracle.kind='simulated'``): the dataset's labels, with mistakes."""

from __future__ import annotations

import numpy as np


def simulated_answers(labels: np.ndarray, num_classes: int, noise: float, seed: int
                      ) -> np.ndarray:
  """The simulated oracle's label for every training sample (``oracle.noise``): the dataset's
  label, or with probability ``noise`` a uniformly random other class. Keyed by ``seed`` alone, so
  every strategy of a seed hears the same answers for the same sample."""
  labels = np.asarray(labels, np.int64)
  if noise <= 0:
    return labels.astype(np.int32)
  rng = np.random.default_rng((int(seed), 0x4E4F4953))  # 'NOIS'
  wrong = rng.random(len(labels)) < noise
  other = (labels + rng.integers(1, num_classes, len(labels))) % num_classes
  return np.where(wrong, other, labels).astype(np.int32)
