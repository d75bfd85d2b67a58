"""BALD: mutual information between the label and the weights, by Monte-Carlo dropout.

Houlsby et al. 2011; Gal, Islam, Ghahramani, ICML 2017. ``H[mean_t p_t] - mean_t H[p_t]`` over
``bald.mc_samples`` stochastic passes, computed in the round's one pool pass (a registered pool
output). Where the dropout is depends on ``model.dropout_layers``:

* ``'head'`` (default): the model's only dropout layer is before the classifier, so a pass is
  the head on penultimate features computed once: a matrix product instead of a forward pass.
* ``'network'``: dropout also after every backbone stage (``jaxdisp.models``); a pass is a full
  forward pass of the network with every dropout layer on and BatchNorm in eval mode (running
  averages, as Gal et al.'s Keras models and baal's ``MCDropoutModule``; PyTorch code that calls
  ``train()`` instead also perturbs, and updates, the BatchNorm statistics).

Either way each sample's dropout masks are keyed by (pass, dataset id), so they do not depend on
the chunking or the device layout: 1 and 4 devices give the same scores.
"""

import jax
import ml_collections

from jaxdisp.errors import ConfigError
from jaxdisp.strategies import base

CONFIG = ml_collections.ConfigDict()
CONFIG.mc_samples = 10  # Monte-Carlo dropout passes (head or network: model.dropout_layers)


def bald_output(c: base.ChunkInputs):
  """Per-row mutual information over ``cfg.bald.mc_samples`` dropout passes."""
  network = c.cfg.model.dropout_layers == 'network'

  def mc_probs(k):
    keys = jax.vmap(jax.random.fold_in, (None, 0))(k, c.idx)  # layout-independent dropout
    if network:  # one full forward pass per sample, its own masks in every layer
      logits = jax.vmap(lambda kk, x: c.setup.model.apply(  # a stochastic forward pass
          c.variables, x[None], train=False, stochastic=True, rngs={'dropout': kk})[0])(
              keys, c.inputs)
    else:
      logits = jax.vmap(lambda kk, f: c.setup.model.apply(
          c.variables, f[None], deterministic=False, method='classify',
          rngs={'dropout': kk})[0])(keys, c.features)
    return jax.nn.softmax(logits)

  probs = jax.lax.map(mc_probs, jax.random.split(c.key, c.cfg.bald.mc_samples))  # [mc, n, C]
  return base.entropy(probs.mean(0)) - base.entropy(probs).mean(0)


base.register_output('bald', bald_output)


def check_group(cfg) -> None:
  """``bald.mc_samples`` (it feeds the BALD diagnostic of every run with dropout, too)."""
  if cfg.bald.mc_samples < 2:
    raise ConfigError(f'bald.mc_samples={cfg.bald.mc_samples} must be >= 2')


# The BALD diagnostic: every run whose model has dropout, whatever its strategy.
DIAGNOSTIC = base.PoolScore('bald', 'BALD', highest=True, outputs=('bald',),
                            compute=lambda view: view.outputs['bald'],
                            available=lambda cfg: cfg.model.dropout > 0)

STRATEGY = base.register(base.Strategy(
    name='bald', summary='mutual information over Monte-Carlo dropout passes',
    reference='Houlsby et al. 2011; Gal et al., ICML 2017',
    cost='1 + {bald.mc_samples} dropout passes (after training) of the head or of the whole '
    'network (model.dropout_layers)', outputs=('bald',),
    score=lambda view: view.outputs['bald'], needs_dropout=True,
    check_config=base.needs_dropout_check('bald'), config=CONFIG, check_group=check_group,
    diagnostics=(DIAGNOSTIC,)), builtin=True)
