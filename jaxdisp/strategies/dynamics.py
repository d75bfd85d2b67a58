"""Training-dynamics scores of the pool: flips, variability, margin dynamics.

Label dispersion is one member of a family of scores computed from how the predictions on a
sample move during training. These three are its siblings, adapted from labeled training data to
the unlabeled pool exactly as the paper adapts its own: the pool is scored in eval mode (no
augmentation) after every recorded epoch (``dispersion.record_every``,
``dispersion.record_from_epoch``), in the same pass that writes the prediction history, and each
sample's statistic is kept as a running ``[P]`` value on device (``train.STATS``): one forward pass
per recorded epoch whatever the number of statistics, never a ``[T, P, C]`` array.

* ``flips``: how often the predicted label changed between consecutive recorded epochs. After
  the forgetting events of Toneva et al., "An Empirical Study of Example Forgetting during Deep
  Neural Network Learning", ICLR 2019, who count correct -> wrong transitions of training examples
  over minibatch presentations; without labels "correct" is undefined, so every change of the
  predicted label counts (a label-free forgetting count). Read off the history
  (``dispersion.label_changes``); no extra record. Integer-valued, so the selection boundary is a
  tie: ordered by ``dispersion.tie_break`` like dispersion.
* ``variability``: the population standard deviation over the T recorded epochs of p_t(y_t), the
  probability of **each epoch's own predicted class** (its top-1 softmax probability). After the
  variability axis of dataset cartography, Swayamdipta et al., "Dataset Cartography", EMNLP 2020,
  which uses the probability of the gold label; without a gold label we take the class the model
  predicts at that epoch. Why not the modal class c* (the reference's suggestion): p_t(c*) is only
  known once c* is, at the end of training, so it needs per-class running sums ``[P, C]`` (C times
  the memory and update traffic: 36 MB for CIFAR-100's 45k pool, 8 GB for 1M samples of 1,000
  classes) or the whole ``[T, P, C]`` trajectory; the epoch's own top-1 probability is O(P) (a
  running mean and M2, Welford). The two differ for samples whose prediction changes class: there p_t(y_t)
  measures how sure the model is of whatever it predicts, while the changes themselves are what
  dispersion and flips count. Highest first.
* ``margin_dynamics``: the mean over the T recorded epochs of the top-1 minus top-2 logit,
  lowest first. After the area under the margin (AUM) of Pleiss et al., "Identifying Mislabeled
  Data using the Area Under the Margin Ranking", NeurIPS 2020, the mean over training of the
  assigned-label logit minus the largest other logit; without an assigned label the reference is
  the epoch's own top-1 class, so the margin is top-1 minus top-2 (always >= 0) and a low mean
  margin means the model kept hesitating between two classes. A running sum.
"""

import jax.numpy as jnp

from jaxdisp import dispersion as disp, train
from jaxdisp.errors import ConfigError
from jaxdisp.strategies import base

_COST = 'no pass beyond dispersion\'s T pool passes (recorded in the same pass)'


def _needs_two_epochs(name: str):
  def check(cfg) -> None:
    t = train.Recording.from_config(cfg, True).num_rows
    if t < 2:
      raise ConfigError(f'strategy={name} needs at least 2 recorded epochs, got T={t} '
                        '(train.epochs, dispersion.record_every, dispersion.record_from_epoch)')
  return check


def flips(view: base.PoolView):
  """Label changes between consecutive recorded epochs, per pool position (float32 [P])."""
  return view.cached('flips', lambda: disp.label_changes(view.history).astype(jnp.float32))


def variability(view: base.PoolView):
  """Population std over the T recorded epochs of each epoch's top-1 probability."""
  def compute():
    m2 = view.stats['prob_m2']
    return jnp.sqrt(jnp.maximum(m2 / max(view.num_recorded, 1), 0.0))
  return view.cached('variability', compute)


def mean_margin(view: base.PoolView):
  """The mean top-1 minus top-2 logit margin over the T recorded epochs (low = uncertain)."""
  return view.cached('mean_margin',
                     lambda: view.stats['margin_sum'] / max(view.num_recorded, 1))


def margin_dynamics(view: base.PoolView):
  """Minus the mean margin (higher = smaller mean margin = query first)."""
  return -mean_margin(view)


# Their pool diagnostics: in every run that keeps the records they read
# (dispersion.record_always keeps all of them).
FLIPS_SCORE = base.PoolScore('flips', 'flips', highest=True, compute=flips, records=('labels',))
VARIABILITY_SCORE = base.PoolScore('variability', 'variability', highest=True,
                                   compute=variability, records=('labels', 'prob_moments'))
MARGIN_DYNAMICS_SCORE = base.PoolScore('margin_dynamics', 'margin dynamics', highest=False,
                                       compute=mean_margin, records=('labels', 'margin_sum'))


FLIPS = base.register(base.Strategy(
    name='flips', summary='most label changes between consecutive recorded epochs',
    reference='Toneva et al., ICLR 2019 (forgetting events), label-free on the pool',
    cost='one pool pass after every recorded epoch (T passes per round), as dispersion',
    records=('labels',), score=flips, tie_break=lambda cfg: cfg.dispersion.tie_break,
    check_config=_needs_two_epochs('flips'), diagnostics=(FLIPS_SCORE,)), builtin=True)

VARIABILITY = base.register(base.Strategy(
    name='variability',
    summary='highest std over recorded epochs of the top-1 probability of each epoch',
    reference='Swayamdipta et al., EMNLP 2020 (dataset cartography), on the predicted class',
    cost=_COST, records=('labels', 'prob_moments'), score=variability,
    check_config=_needs_two_epochs('variability'), diagnostics=(VARIABILITY_SCORE,)),
    builtin=True)

MARGIN_DYNAMICS = base.register(base.Strategy(
    name='margin_dynamics', summary='lowest mean top-1 minus top-2 logit over recorded epochs',
    reference='Pleiss et al., NeurIPS 2020 (area under the margin), label-free',
    cost=_COST, records=('labels', 'margin_sum'), score=margin_dynamics,
    diagnostics=(MARGIN_DYNAMICS_SCORE,)), builtin=True)
