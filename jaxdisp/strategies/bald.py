"""BALD: mutual information between the label and the weights, by Monte-Carlo dropout.

Houlsby et al. 2011; Gal, Islam, Ghahramani, ICML 2017. ``H[mean_t p_t] - mean_t H[p_t]`` over
``bald.mc_samples`` dropout passes of the head (the model's only dropout layer, before the
classifier), on penultimate features computed once: a matrix product per pass instead of a
forward pass. Each sample's dropout masks are keyed by its dataset id, so they do not depend
on the device layout.
"""

import jax

from jaxdisp.strategies import base


def bald_output(c: base.ChunkInputs):
  """Per-row mutual information over ``cfg.bald.mc_samples`` dropout passes of the head."""

  def mc_probs(k):
    keys = jax.vmap(jax.random.fold_in, (None, 0))(k, c.idx)  # layout-independent dropout
    logits = jax.vmap(lambda kk, f: c.setup.model.apply(
        c.variables, f[None], deterministic=False, method='classify',
        rngs={'dropout': kk})[0])(keys, c.features)
    return jax.nn.softmax(logits)

  probs = jax.lax.map(mc_probs, jax.random.split(c.key, c.cfg.bald.mc_samples))  # [mc, n, C]
  return base.entropy(probs.mean(0)) - base.entropy(probs).mean(0)


base.register_output('bald', bald_output)

STRATEGY = base.register(base.Strategy(
    name='bald', summary='mutual information over Monte-Carlo dropout passes of the head',
    reference='Houlsby et al. 2011; Gal et al., ICML 2017',
    cost='1 + {bald.mc_samples} dropout passes of the head (after training)', outputs=('bald',),
    score=lambda view: view.outputs['bald'], needs_dropout=True,
    check_config=base.needs_dropout_check('bald')), builtin=True)
