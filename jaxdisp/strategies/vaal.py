"""VAAL: Variational Adversarial Active Learning (Sinha, Ebrahimi, Darrell, ICCV 2019).

A beta-VAE learns a latent space from the labeled and the unlabeled images; a discriminator D on
the latent mean mu learns to tell labeled (target 1) from unlabeled (target 0), while the VAE
learns, besides reconstructing, to fool it (target 1 for both). The query is the ``budget`` pool
samples with the **lowest** D(mu): those D is surest are unlabeled, i.e. least like anything
labeled. Followed: the authors' code (github.com/sinhasam/vaal, ``model.py``, ``solver.py``,
``sampler.py``), not the toolkits that invert a target or the query direction
(``../shared/reference/strategies.md`` section 1, pitfalls).

As in the authors' code:

* Encoder: convolutions k4 s2 p1 without bias, each with BatchNorm + ReLU, channels ``w, 2w,
  4w, ...`` (``w = vaal.width``, 128 in the paper), then two linear heads mu and log sigma^2
  (``vaal.latent_dim``, 32). Decoder: linear to ``top x h0 x w0``, transposed convolutions k4 s2
  with BatchNorm + ReLU halving the channels, and a 1x1 transposed convolution to the image's
  channels (no activation). Kaiming-normal initialisation (fan-in), zero biases; here for
  every kernel (the authors' ``kaiming_init`` skips the transposed convolutions, which keep
  PyTorch's default), drawn as one vector of normals (:func:`kaiming_fill`).
* D: an MLP on mu (never a sampled z), ``latent -> 512 -> ReLU -> 512 -> ReLU -> 1``; it outputs
  logits and the losses use ``optax.sigmoid_binary_cross_entropy`` (the authors' sigmoid + BCE).
* ``vae(x) = MSE(recon, x) (mean over elements) + beta KL``, ``KL = -1/2 sum(1 + log sigma^2 -
  mu^2 - sigma^2)`` summed over the batch and the latent dimensions (``vaal.kl_reduction='sum'``;
  ``'batch_mean'`` divides it by the batch size, the per-sample ELBO: the summed KL dwarfs the
  mean MSE, so this is a documented knob).
* One iteration: two VAE steps, each on a fresh labeled batch x_L and unlabeled batch x_U, with
  loss ``vae(x_L) + vae(x_U) + lambda [BCE(D(mu_L), 1) + BCE(D(mu_U), 1)]`` (gradients to the
  VAE only; ``lambda = vaal.adversary_weight``); then one D step on the last VAE step's batches,
  ``BCE(D(mu_L), 1) + BCE(D(mu_U), 0)``, mu computed by the updated VAE (train-mode BatchNorm)
  without gradient. Adam (``vaal.learning_rate``, 5e-4) for both; batches of
  ``vaal.batch_size`` (128) from each set; horizontal flips.
* Everything re-initialised every round (the authors' ``main.py`` builds new models per split).

Adapted for jaxdisp:

* **When.** The VAE and D share nothing with the task model, so instead of alternating their
  steps with the task model's in one loop they are trained after it, inside the round's scoring
  step (:func:`score`): the same computation, and a pure function of the round (weights and
  batches keyed from ``view.key``). Nothing of it is checkpointed: a run killed during it
  resumes from the round's last training checkpoint and trains it again, to the same ids.
* **How long.** ``vaal.epochs`` counts passes over the images the VAE sees: a round makes
  ``max(1, floor(vaal.epochs * (L + P) / vaal.batch_size))`` iterations (L labeled, P scored
  pool samples). The authors count 50,000 * 100 // 128 = 39,062 iterations per split whatever
  the labeled size; on CIFAR-10 (L + P = 50,000) the default ``vaal.epochs=100`` gives exactly
  that, and smaller pools scale it down.
* **Batches** are drawn uniformly with replacement from the labeled set and from the pool (the
  authors cycle shuffled loaders): fixed shapes, no padding to mask, any set size, the same
  compiled step in every round. The batch is split over the ``data`` axis (data parallel,
  sync-BN, like the task model); the images are the task model's normalised inputs (dataset
  mean / std, not the authors' 0.5 / 0.5), so the reconstruction target is that image.
* **Feature vectors** (``dataset.source=embeddings``: ``image_shape`` is ``(D,)``, the inputs
  the task model's vectors standardised per dimension). The authors' VAE is convolutional, for
  images only; here it becomes an MLP of the same pattern (``vaal_model.VectorEncoder`` and
  ``VectorDecoder``): encoder ``D -> h -> h`` (Dense without bias + BatchNorm + ReLU, as each
  convolution block) then the mu and log sigma^2 heads; decoder ``z -> h -> h`` (the same
  blocks) then a Dense with bias to ``D``, no activation (the target is the standardised
  vector). ``h = 4 * vaal.width`` (512 at the paper's 128, the discriminator's width). The
  discriminator (already an MLP on mu), the losses (MSE mean over elements + beta KL, the
  adversarial and D BCE terms), beta, lambda, the step counts, the batches, the initialisation
  and the query are unchanged. No flips (no augmentation for vectors).
* **Image size.** The 32x32 architecture has 4 encoder stages (32 -> 2) and 3 transposed
  convolutions (4 -> 32). For an image side s the encoder has ``max(1, floor(log2 s) - 1)``
  stages, so the bottleneck is 2x2 whenever s is a power of two (16x16: 3 stages, channels
  ``w, 2w, 4w``), and the decoder starts at ``ceil(s / 2^(stages-1))`` and is cropped to s.
* **Query** in eval mode (BatchNorm running averages, no flips; the authors query in train mode),
  score ``-D(mu)`` as a logit (the same order as the probability, without float saturation ties).
* NaN/inf in any VAE or D loss stops the round with one line (:class:`NumericalError`), like
  non-finite scores.
* **Speed on XLA:CPU.** The decoder's k4 s2 transposed convolutions are computed in sub-pixel
  form (four 2x2 convolutions, :class:`~jaxdisp.strategies.vaal_model.ConvTranspose4x4Stride2`):
  the same parameters and the same function up to float rounding, with a VAE gradient 4x faster
  on XLA:CPU (0.75 s against 3.2 s per batch of 256 at width 16, measured on one machine).
* Not reproduced: model selection on a validation split carved from the training data (the
  5,000 validation labels fall outside the budget in the authors' code).
* A stop signal (SIGTERM, Ctrl-C) during the VAAL step is honoured between iterations (on
  TPU/GPU: between compiled chunks of ``DEVICE_CHUNK``); nothing of it is checkpointed, the rerun
  trains it again from the round's last training checkpoint. Progress lines every
  ``log.progress_seconds``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax

from jaxdisp import parallel, train
from jaxdisp.errors import ConfigError, NumericalError
from jaxdisp.strategies import base
from jaxdisp.strategies.vaal_model import (
    KL_REDUCTIONS, VAE, Discriminator, adversarial_loss, discriminator_loss, is_vector,
    kaiming_fill, query_scores, vae_loss)

Array = jax.Array


# ---- setup and state ----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class VaalSetup:
  """The static half of a round's VAAL training (hashable: the compiled steps close over it)."""
  task: train.TrainSetup  # for the images: mesh, image placement, pool chunk, step loop
  latent_dim: int
  beta: float
  adversary_weight: float
  epochs: float
  batch_size: int
  learning_rate: float
  width: int
  kl_reduction: str

  @classmethod
  def from_config(cls, cfg, task: train.TrainSetup) -> 'VaalSetup':
    v = cfg.vaal
    return cls(task, int(v.latent_dim), float(v.beta), float(v.adversary_weight),
               float(v.epochs), int(v.batch_size), float(v.learning_rate), int(v.width),
               str(v.kl_reduction))

  @property
  def vae(self) -> VAE:
    return VAE(tuple(self.task.image_shape), self.latent_dim, self.width)

  @property
  def discriminator(self) -> Discriminator:
    return Discriminator()

  @property
  def tx(self) -> optax.GradientTransformation:
    return optax.adam(self.learning_rate)

  def iterations(self, num_labeled: int, num_pool: int) -> int:
    """``max(1, floor(epochs * (L + P) / batch_size))``."""
    return max(1, int(math.floor(self.epochs * (num_labeled + num_pool) / self.batch_size)))


@flax.struct.dataclass
class VaalState:
  vae_params: Any
  vae_stats: Any  # BatchNorm running averages
  vae_opt: Any
  d_params: Any
  d_opt: Any
  first_bad: Array  # int32: first iteration with a NaN/inf loss, -1 = none
  last_losses: Array  # float32 [2]: the last iteration's VAE and D losses


def init_state(vs: VaalSetup, key: Array) -> VaalState:
  """Fresh VAE and D (Kaiming normal) and their Adam states."""
  k_vae, k_d = jax.random.split(key)
  x = jnp.zeros((1, *vs.task.image_shape), jnp.float32)
  z = jnp.zeros((1, vs.latent_dim), jnp.float32)
  v = kaiming_fill(jax.eval_shape(lambda: vs.vae.init(jax.random.key(0), x, jax.random.key(1),
                                                      False)), k_vae)
  d = kaiming_fill(jax.eval_shape(lambda: vs.discriminator.init(jax.random.key(0), z)), k_d)
  return VaalState(v['params'], v['batch_stats'], vs.tx.init(v['params']), d['params'],
                   vs.tx.init(d['params']), jnp.int32(-1), jnp.zeros((2,), jnp.float32))


def images(vs: VaalSetup, data, idx: Array) -> Array:
  """Normalised float32 images (or standardised feature vectors ``[B, D]``) of the dataset rows
  ``idx`` (inside jit): the task model's inputs, unaugmented."""
  return train.model_inputs(vs.task, data, idx).astype(jnp.float32)


def draw_batch(vs: VaalSetup, data, buffer: Array, num: Array, key: Array) -> Array:
  """``batch_size`` images drawn uniformly with replacement from the first ``num`` ids of
  ``buffer``, each flipped horizontally with probability 1/2 (feature vectors: not flipped);
  split over ``data``."""
  k_pos, k_flip = jax.random.split(key)
  b, mesh = vs.batch_size, vs.task.mesh
  pos = jax.random.randint(k_pos, (b,), 0, jnp.maximum(num, 1))
  idx = parallel.constrain(buffer[pos], mesh)
  x = images(vs, data, idx)
  if is_vector(vs.task.image_shape):  # no augmentation for feature vectors
    return parallel.constrain(x, mesh)
  flip = jax.random.bernoulli(k_flip, 0.5, (b,))
  return parallel.constrain(jnp.where(flip[:, None, None, None], x[:, :, ::-1], x), mesh)


def vae_step(vs: VaalSetup, st: VaalState, x_l: Array, x_u: Array,
             key: Array) -> tuple[VaalState, Array]:
  """One VAE step: reconstruct both batches, fool D (target 1 for both); D is not updated."""
  k_l, k_u = jax.random.split(key)
  vae, disc = vs.vae, vs.discriminator

  def loss_fn(params):
    (r_l, _, mu_l, lv_l), upd = vae.apply({'params': params, 'batch_stats': st.vae_stats}, x_l,
                                          k_l, True, mutable=['batch_stats'])
    (r_u, _, mu_u, lv_u), upd = vae.apply({'params': params, 'batch_stats': upd['batch_stats']},
                                          x_u, k_u, True, mutable=['batch_stats'])
    d_l = disc.apply({'params': st.d_params}, mu_l)
    d_u = disc.apply({'params': st.d_params}, mu_u)
    loss = (vae_loss(x_l, r_l, mu_l, lv_l, vs.beta, vs.kl_reduction)
            + vae_loss(x_u, r_u, mu_u, lv_u, vs.beta, vs.kl_reduction)
            + vs.adversary_weight * adversarial_loss(d_l, d_u))
    return loss, upd['batch_stats']

  (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(st.vae_params)
  updates, opt = vs.tx.update(grads, st.vae_opt, st.vae_params)
  params = optax.apply_updates(st.vae_params, updates)
  return st.replace(vae_params=params, vae_stats=stats, vae_opt=opt), loss


def discriminator_step(vs: VaalSetup, st: VaalState, x_l: Array,
                       x_u: Array) -> tuple[VaalState, Array]:
  """One D step: labeled -> 1, unlabeled -> 0, on mu of the current VAE (no gradient to it;
  train-mode BatchNorm, whose running averages it updates as the authors' forward does)."""
  vae, disc = vs.vae, vs.discriminator
  (mu_l, _), upd = vae.apply({'params': st.vae_params, 'batch_stats': st.vae_stats}, x_l, True,
                             method='encode', mutable=['batch_stats'])
  (mu_u, _), upd = vae.apply({'params': st.vae_params, 'batch_stats': upd['batch_stats']}, x_u,
                             True, method='encode', mutable=['batch_stats'])
  mu_l, mu_u = jax.lax.stop_gradient(mu_l), jax.lax.stop_gradient(mu_u)

  def loss_fn(params):
    return discriminator_loss(disc.apply({'params': params}, mu_l),
                              disc.apply({'params': params}, mu_u))

  loss, grads = jax.value_and_grad(loss_fn)(st.d_params)
  updates, opt = vs.tx.update(grads, st.d_opt, st.d_params)
  params = optax.apply_updates(st.d_params, updates)
  return st.replace(d_params=params, d_opt=opt, vae_stats=upd['batch_stats']), loss


def iteration(vs: VaalSetup, i: Array, st: VaalState, data, labeled: Array, num_labeled: Array,
              pool: Array, num_pool: Array, key: Array) -> VaalState:
  """Iteration ``i``: two VAE steps on fresh batches, one D step on the second step's batches.
  Every draw is keyed by ``(key, i, step)``: the same on any device count."""
  k = jax.random.fold_in(key, i)
  losses = []
  for s in range(2):  # unrolled: XLA:CPU runs conv gradients ~3x slower inside a scan
    k_l, k_u, k_z = jax.random.split(jax.random.fold_in(k, s), 3)
    x_l = draw_batch(vs, data, labeled, num_labeled, k_l)
    x_u = draw_batch(vs, data, pool, num_pool, k_u)
    st, loss = vae_step(vs, st, x_l, x_u, k_z)
    losses.append(loss)
  st, d_loss = discriminator_step(vs, st, x_l, x_u)
  finite = jnp.isfinite(losses[0]) & jnp.isfinite(losses[1]) & jnp.isfinite(d_loss)
  first_bad = jnp.where((st.first_bad < 0) & ~finite, i.astype(jnp.int32), st.first_bad)
  return st.replace(first_bad=first_bad, last_losses=jnp.stack([losses[1], d_loss]))


def train_loop(vs: VaalSetup, st: VaalState, data, labeled: Array, num_labeled: Array,
               pool: Array, num_pool: Array, key: Array, start: Array, stop: Array
               ) -> VaalState:
  """Iterations ``start <= i < stop`` in one compiled loop (TPU/GPU; ``train.loop.on_device``);
  the bounds are traced, so every chunk of :data:`DEVICE_CHUNK` reuses one compile."""
  return train.loop.on_device(functools.partial(iteration, vs), stop, st, data, labeled,
                              num_labeled, pool, num_pool, key, start=start)


def pool_scores(vs: VaalSetup, st: VaalState, data, pool: Array, num_pool: Array) -> Array:
  """``-D(mu)`` of every pool position, eval mode (BatchNorm running averages), in chunks."""
  vae, disc = vs.vae, vs.discriminator
  v = {'params': st.vae_params, 'batch_stats': st.vae_stats}

  def chunk(idx, valid):
    del valid
    mu, _ = vae.apply(v, images(vs, data, idx), False, method='encode')
    return query_scores(disc.apply({'params': st.d_params}, mu))

  return parallel.map_in_chunks(chunk, pool, num_pool, vs.task.chunk, vs.task.mesh)


@dataclasses.dataclass(frozen=True)
class Compiled:
  init: Callable
  iteration: Callable
  loop: Callable
  scores: Callable


@functools.lru_cache(maxsize=8)
def compiled(vs: VaalSetup) -> Compiled:
  """The jitted steps of ``vs``: compiled once per run (the buffers have fixed capacities)."""
  rep = parallel.replicated(vs.task.mesh)
  return Compiled(
      init=jax.jit(functools.partial(init_state, vs), out_shardings=rep),
      iteration=train.loop.jit_step(functools.partial(iteration, vs)),
      loop=jax.jit(functools.partial(train_loop, vs), donate_argnums=(0,)),
      scores=jax.jit(functools.partial(pool_scores, vs)))


# Iterations per compiled call on TPU/GPU: between calls a stop is honoured and progress shown.
DEVICE_CHUNK = 256


def _losses(st: VaalState) -> str:
  vae_loss, d_loss = (float(v) for v in st.last_losses)
  return f'VAE loss {vae_loss:.4g}  D loss {d_loss:.4g}'


def train_vaal(vs: VaalSetup, data, labeled: Array, num_labeled, pool: Array, num_pool,
               key: Array, progress_seconds: float = 30.0) -> tuple[VaalState, int]:
  """A fresh VAE and D trained on the labeled set and the pool: (state, iterations run). A stop
  signal is honoured between iterations (chunks of them on TPU/GPU), progress is logged every
  ``progress_seconds``."""
  if vs.batch_size % vs.task.mesh.size:
    raise ConfigError(f'vaal.batch_size={vs.batch_size} must be a multiple of the '
                      f'{vs.task.mesh.size} devices')
  c = compiled(vs)
  k_init, k_train = jax.random.split(key)
  st = c.init(k_init)
  n = vs.iterations(int(num_labeled), int(num_pool))
  nl, npool = jnp.int32(num_labeled), jnp.int32(num_pool)
  beat = train.loop.Heartbeat("VAAL's VAE + discriminator training", n, progress_seconds,
                              describe=_losses)
  if vs.task.step_loop == 'device':
    run = lambda s, a, b: c.loop(s, data, labeled, nl, pool, npool, k_train, a, b)
    st = train.loop.in_chunks(run, n, st, DEVICE_CHUNK, beat)
  else:  # XLA:CPU: one call per iteration (see train.loop)
    st = train.loop.on_host(c.iteration, n, st, data, labeled, nl, pool, npool, k_train,
                            mesh=vs.task.mesh, after=beat)
  return st, n


def score(view: base.PoolView) -> Array:
  """Trains a fresh VAE and D on the round's labeled set and pool, then scores ``-D(mu)``."""
  vs = VaalSetup.from_config(view.cfg, view.setup)
  st, n = train_vaal(vs, view.data, view.labeled, view.num_labeled, view.pool, view.num_pool,
                     jax.random.fold_in(view.key, 0x7AA1), view.cfg.log.progress_seconds)
  bad = int(st.first_bad)
  if bad >= 0:
    raise NumericalError(f'strategy=vaal: the VAE/discriminator loss is NaN/inf at iteration '
                         f'{bad} of {n}; refusing to select (lower vaal.learning_rate or '
                         'vaal.beta, or use vaal.kl_reduction=batch_mean)')
  return compiled(vs).scores(st, view.data, view.pool, view.num_pool)


# ---- config -------------------------------------------------------------------------------------

CONFIG = dict(  # the vaal group: cfg.vaal
    latent_dim=32,  # size of mu and log sigma^2
    beta=1.0,  # weight of the KL term of the VAE loss
    adversary_weight=1.0,  # lambda: weight of the VAE's "fool D" term
    # Length of the VAE + D training per round, in passes over the images they see: a round makes
    # max(1, floor(epochs * (labeled + pool) / batch_size)) iterations (2 VAE steps + 1 D step
    # each). 100 on CIFAR-10 (labeled + pool = 50,000) = the authors' 39,062 iterations.
    epochs=100.0,
    batch_size=128,  # labeled and unlabeled images per step (each)
    learning_rate=5e-4,  # Adam, VAE and D
    # images: channels of the first encoder stage (doubling per stage: 128..1024 at 32x32);
    # feature vectors: the MLP VAE's hidden layers have 4 * width units (512 at 128)
    width=128,
    # 'sum': the KL summed over batch and latent dims (the authors'); 'batch_mean': over the batch
    # size (the per-sample ELBO; the summed KL dwarfs the mean-over-elements MSE)
    kl_reduction='sum',
)


def check_group(cfg) -> None:
  v = cfg.vaal
  finite = math.isfinite

  def need(ok, msg):
    if not ok:
      raise ConfigError(msg)

  need(v.latent_dim > 0, f'vaal.latent_dim={v.latent_dim} must be positive')
  need(v.width > 0, f'vaal.width={v.width} must be positive (channels of the first encoder '
       'stage, 4 x width hidden units for feature vectors; the paper uses 128)')
  need(finite(v.beta) and v.beta >= 0, f'vaal.beta={v.beta} must be a finite number >= 0')
  need(finite(v.adversary_weight) and v.adversary_weight >= 0,
       f'vaal.adversary_weight={v.adversary_weight} must be a finite number >= 0')
  need(finite(v.epochs) and v.epochs > 0,
       f'vaal.epochs={v.epochs} must be a finite number > 0 (passes over labeled + pool)')
  need(v.batch_size > 0, f'vaal.batch_size={v.batch_size} must be positive')
  need(not cfg.num_devices or v.batch_size % cfg.num_devices == 0,
       f'vaal.batch_size={v.batch_size} must be a multiple of num_devices={cfg.num_devices}')
  need(finite(v.learning_rate) and v.learning_rate > 0,
       f'vaal.learning_rate={v.learning_rate} must be a finite number > 0')
  need(v.kl_reduction in KL_REDUCTIONS,
       f"vaal.kl_reduction={v.kl_reduction!r} must be 'sum' or 'batch_mean'")


STRATEGY = base.register(base.Strategy(
    name='vaal', summary='lowest discriminator D(mu) of a VAE trained adversarially on labeled '
    'vs unlabeled images (most unlabeled-looking)',
    reference='Sinha et al., ICCV 2019 (authors\' code; trained after the task model, '
    'epochs scaled to the pool)',
    cost='VAE + D from scratch: {vaal.epochs} x (L + P) / {vaal.batch_size} iterations of 2 VAE '
    'steps + 1 D step (each on a labeled and an unlabeled batch); one encoder pass over the pool',
    score=score, config=CONFIG, check_group=check_group), builtin=True)
