"""The pool diagnostics of a round: every pool sample's scores, and whether the model got it
right (``diagnostics/round_<r>.npz``, read by ``jaxdisp.report``).

The scores are the registered strategies' ``Strategy.diagnostics`` (:class:`~jaxdisp.strategies.
PoolScore`) that the run has (``rounds.Experiment.diagnostic_scores``), each computed once from
the view the strategy scored (``rounds.Scored.view``): a strategy's own score is not computed
again (label dispersion is computed once per round), and nothing needs another pool pass. The
file holds, for the ``n`` real pool samples:

* ``ids`` int64 ``[n]``: their dataset ids; ``correct`` bool ``[n]``: whether the round's model
  predicts their true label (the dataset's, not the oracle's);
* one float32 ``[n]`` array per score, under its name (e.g. ``dispersion``, ``margin``);
* ``score_names`` (str ``[S]``: the score arrays, in table order), ``score_labels`` (str: their
  display names) and ``score_highest`` (bool: True = the highest values are the most uncertain).

A score the run does not have (no prediction history, no dropout, ...) is in none of them.
"""

from __future__ import annotations

import numpy as np

from jaxdisp import parallel, rounds


def pool_diagnostics(exp: rounds.Experiment, ctx: rounds.RoundCtx, scored: rounds.Scored) -> dict:
  """The diagnostics file's arrays for the round ``ctx`` (host arrays). Every process must call
  it: gathering a score over the devices is a collective."""
  n = int(ctx.num_pool)
  view = scored.view
  probs = parallel.to_host(view.outputs['probs'])[:n]
  labels = np.asarray(exp.dataset.train_labels)[ctx.pool_ids]  # true labels, not the oracle's
  out = {'ids': ctx.pool_ids.astype(np.int64), 'correct': probs.argmax(-1) == labels}
  scores = exp.diagnostic_scores
  for s in scores:
    out[s.name] = parallel.to_host(s.compute(view))[:n].astype(np.float32)
  out['score_names'] = np.array([s.name for s in scores], dtype=str)
  out['score_labels'] = np.array([s.label for s in scores], dtype=str)
  out['score_highest'] = np.array([s.highest for s in scores], dtype=bool)
  return out
