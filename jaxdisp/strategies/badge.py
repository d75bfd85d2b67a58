"""BADGE: k-means++ seeding on last-layer gradient embeddings (Ash et al., ICLR 2020).

Each pool sample's embedding is the gradient of the cross-entropy loss with respect to the
classifier's weights, for the label the model predicts (the hallucinated label, as the authors'
``get_grad_embedding``): ``g = (p - e_argmax(p)) (x) h``, with ``p`` the softmax and ``h`` the
penultimate features; no bias term. (The authors store ``-g``, which changes no distance.) The
batch is chosen by k-means++ seeding on these embeddings, so it is both uncertain (large
gradients) and diverse (spread out in gradient space).

Adapted for accelerators, and made deterministic:

* The ``C * d`` embeddings are never built, nor any N x N matrix: distances come from the
  factors, ``||a (x) h - a' (x) h'||^2 = ||a||^2 ||h||^2 + ||a'||^2 ||h'||^2 - 2 (a.a')(h.h')``
  (as the authors' current code, after Zhang et al., arXiv 2306.09910, App. D). One step of the
  seeding costs ``O(N (C + d))`` and keeps one ``[N]`` vector of squared distances D^2 to the
  nearest chosen center, split over the devices like the pool.
* The first center is the largest embedding, ``argmax ||g||`` (the authors' code; the lowest
  position on ties), or with ``badge.first_center='random'`` a uniformly random pool sample
  (standard k-means++). Every later center is drawn with probability proportional to D^2;
  chosen samples have D = 0, so they are never drawn again (the authors redraw repeats).
* Draws are by inverse CDF: step ``s`` takes ``u_s = uniform(fold_in(view.key, s))`` and picks
  the first position whose cumulative D^2 exceeds ``u_s * sum(D^2)``. The cumulative sum is taken
  over a replicated copy of D^2 (one all-gather of ``[N]`` per step), so its rounding, and the
  pick, do not depend on the device count; and a NumPy loop given the same uniforms makes the
  same picks (tests/test_badge.py). If every unchosen sample has D = 0 (e.g. a model that is
  certain of everything has g = 0), the draw is uniform over the unchosen samples instead.

Not reproduced: the authors' training recipe (Adam until 99% train accuracy); jaxdisp trains
every strategy the same way.
"""

import functools

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import Mesh

from jaxdisp import parallel
from jaxdisp.errors import ConfigError
from jaxdisp.strategies import base

Array = jax.Array

CONFIG = ml_collections.ConfigDict()
# k-means++ seeding's first center: 'max_norm' = the largest gradient embedding (the authors'
# code), 'random' = uniformly random over the pool (standard k-means++). Later centers are
# always drawn with probability proportional to D^2.
CONFIG.first_center = 'max_norm'


def gradient_factors(probs: Array) -> Array:
  """``a = p - e_argmax(p)``: the embedding is ``a (x) h`` (``[P, C]``)."""
  onehot = jax.nn.one_hot(jnp.argmax(probs, -1), probs.shape[-1], dtype=probs.dtype)
  return probs - onehot


def step_uniforms(key: Array, budget: int) -> Array:
  """``u_s = uniform(fold_in(key, s))`` for ``s < budget``: the draw of seeding step ``s``."""
  return jax.vmap(lambda s: jax.random.uniform(jax.random.fold_in(key, s)))(jnp.arange(budget))


@functools.partial(jax.jit, static_argnames=('budget', 'mesh', 'first_center'))
def kmeanspp_seeding(a: Array, h: Array, num_valid: Array, uniforms: Array, budget: int,
                     mesh: Mesh, first_center: str = 'max_norm') -> tuple[Array, Array]:
  """(positions, their distance to the nearest earlier center when chosen) of ``budget`` steps
  of k-means++ seeding on the embeddings ``a[i] (x) h[i]`` of the first ``num_valid`` rows.

  The first pick's "distance" is its embedding norm. ``uniforms[s]`` drives step ``s``.
  """
  n = a.shape[0]
  valid = jnp.arange(n) < num_valid
  norm2 = jnp.sum(a * a, -1) * jnp.sum(h * h, -1)  # ||g||^2

  def dist2_to(j):  # [n] squared distances to center j, from the factors
    cross = jnp.sum(a * a[j], -1) * jnp.sum(h * h[j], -1)
    return jnp.maximum(norm2 + norm2[j] - 2.0 * cross, 0.0)

  def draw(weights, u):  # inverse CDF: the first row whose cumulative weight exceeds u * total
    w = jax.lax.with_sharding_constraint(weights, parallel.replicated(mesh))
    cum = jnp.cumsum(w)
    pick = jnp.sum(cum <= u * cum[-1]).astype(jnp.int32)
    last = (n - 1 - jnp.argmax(w[::-1] > 0)).astype(jnp.int32)  # u * total rounded up to total
    return jnp.minimum(pick, last)

  def add(j, d2):
    return jnp.where(valid, jnp.minimum(d2, dist2_to(j)), 0.0).at[j].set(0.0)

  if first_center == 'max_norm':
    j0 = jnp.argmax(jnp.where(valid, norm2, -1.0)).astype(jnp.int32)
  else:
    j0 = draw(valid.astype(jnp.float32), uniforms[0])
  d2 = add(j0, jnp.full((n,), jnp.inf, jnp.float32))
  taken = jnp.zeros(n, bool).at[j0].set(True)
  chosen = jnp.zeros(budget, jnp.int32).at[0].set(j0)
  dists = jnp.zeros(budget, jnp.float32).at[0].set(jnp.sqrt(norm2[j0]))

  def pick(i, carry):
    d2, taken, chosen, dists = carry
    left = (valid & ~taken).astype(jnp.float32)
    j = draw(jnp.where(jnp.sum(d2) > 0, d2, left), uniforms[i])
    dists = dists.at[i].set(jnp.sqrt(d2[j]))
    return add(j, d2), taken.at[j].set(True), chosen.at[i].set(j), dists

  _, _, chosen, dists = jax.lax.fori_loop(1, budget, pick, (d2, taken, chosen, dists))
  return chosen, dists


def select(view: base.PoolView, budget: int):
  probs, feats = view.outputs['probs'], view.outputs['features']
  return kmeanspp_seeding(gradient_factors(probs), feats, view.num_pool,
                          step_uniforms(view.key, budget), budget=budget, mesh=view.mesh,
                          first_center=view.cfg.badge.first_center)


def check_group(cfg) -> None:
  if cfg.badge.first_center not in ('max_norm', 'random'):
    raise ConfigError(f"badge.first_center={cfg.badge.first_center!r} must be 'max_norm' or "
                      "'random'")


STRATEGY = base.register(base.Strategy(
    name='badge', summary='k-means++ seeding on last-layer gradient embeddings of the predicted '
    'label', reference='Ash et al., ICLR 2020 (factored distances, deterministic seeding)',
    cost='one pool pass; budget seeding steps of O(N (C + d)) (no N x N or N x Cd matrix)',
    outputs=('probs', 'features'), select=select, config=CONFIG, check_group=check_group),
    builtin=True)
