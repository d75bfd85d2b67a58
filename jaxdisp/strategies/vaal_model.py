"""VAAL's networks and losses (Sinha, Ebrahimi, Darrell, ICCV 2019; the authors' ``model.py``
and ``solver.py``): the beta-VAE, the discriminator on its latent mean, their losses, and their
Kaiming-normal initialisation. How they are trained and how the pool is scored: ``vaal.py``.

The VAE is the authors' convolutional one for images (``image_shape`` H, W, C) and, for feature
vectors (``image_shape`` (D,), ``dataset.source=embeddings``), an MLP of the same pattern
(:class:`VectorEncoder`, :class:`VectorDecoder`; an adaptation, the authors' VAE is
convolutional only). The discriminator and the losses are the same for both.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

Array = jax.Array

KL_REDUCTIONS = ('sum', 'batch_mean')
DISCRIMINATOR_HIDDEN = 512
# The MLP VAE for feature vectors: VECTOR_LAYERS hidden layers of VECTOR_HIDDEN_PER_WIDTH *
# vaal.width units in the encoder and in the decoder (512 at the paper's width 128, the
# discriminator's width).
VECTOR_HIDDEN_PER_WIDTH = 4
VECTOR_LAYERS = 2
# torch.nn.init.kaiming_normal_ (the authors' kaiming_init): fan-in, gain sqrt(2), normal.
_kaiming = nn.initializers.variance_scaling(2.0, 'fan_in', 'normal')


# ---- the networks -------------------------------------------------------------------------------

def is_vector(image_shape) -> bool:
  """Whether the inputs are feature vectors ``(D,)`` (the MLP VAE) rather than images."""
  return len(tuple(image_shape)) == 1


def vector_hidden(width: int) -> int:
  """Hidden units of the MLP VAE's layers for ``vaal.width``."""
  return VECTOR_HIDDEN_PER_WIDTH * int(width)


def num_stages(image_shape) -> int:
  """Encoder stages for an image of ``image_shape`` (H, W, C): 4 at 32x32, 3 at 16x16."""
  side = min(int(image_shape[0]), int(image_shape[1]))
  return max(1, int(math.floor(math.log2(max(side, 1)))) - 1)


def _batch_norm(train_mode: bool):
  return nn.BatchNorm(use_running_average=not train_mode, momentum=0.9, epsilon=1e-5)


class ConvTranspose4x4Stride2(nn.Module):
  """``nn.ConvTranspose(features, (4, 4), (2, 2), padding='SAME', use_bias=False)``, the same
  parameter (``kernel [4, 4, in, features]``) and the same function, computed as four ordinary
  2x2 convolutions, one per output phase, interleaved (sub-pixel form). With padding SAME, output
  row ``2p`` is ``x[p-1] K[0] + x[p] K[2]`` and row ``2p+1`` is ``x[p] K[1] + x[p+1] K[3]`` (the
  same along columns). Why: XLA:CPU computes the gradient of a transposed convolution (an
  input-dilated convolution) off its fast path, 3x slower than this form at the demo's sizes
  (``tests/test_vaal.py`` checks the two agree, values and gradients)."""
  features: int

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kernel = self.param('kernel', _kaiming, (4, 4, x.shape[-1], self.features))
    x, kernel = nn.dtypes.promote_dtype(x, kernel)
    n, h, w, _ = x.shape
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    taps = ((0, 2), (1, 3))  # kernel rows (columns) used by the even and the odd output phase
    rows = []
    for a in range(2):
      phases = []
      for b in range(2):
        k = kernel[jnp.array(taps[a])][:, jnp.array(taps[b])]
        phases.append(jax.lax.conv_general_dilated(
            padded[:, a:a + h + 1, b:b + w + 1], k, (1, 1), 'VALID',
            dimension_numbers=('NHWC', 'HWIO', 'NHWC')))
      rows.append(jnp.stack(phases, 3))  # [n, h, w, 2 (column phase), features]
    return jnp.stack(rows, 2).reshape(n, 2 * h, 2 * w, self.features)


class Encoder(nn.Module):
  """Convolutions k4 s2 p1 (no bias) + BN + ReLU, then the mu and log sigma^2 heads."""
  latent_dim: int
  width: int
  stages: int

  @nn.compact
  def __call__(self, x: Array, train_mode: bool) -> tuple[Array, Array]:
    for i in range(self.stages):
      x = nn.Conv(self.width * 2**i, (4, 4), (2, 2), padding=((1, 1), (1, 1)), use_bias=False,
                  kernel_init=_kaiming)(x)
      x = nn.relu(_batch_norm(train_mode)(x))
    x = x.reshape(x.shape[0], -1)
    mu = nn.Dense(self.latent_dim, kernel_init=_kaiming, name='mu')(x)
    logvar = nn.Dense(self.latent_dim, kernel_init=_kaiming, name='logvar')(x)
    return mu, logvar


class Decoder(nn.Module):
  """Linear to ``top x h0 x w0``, transposed convolutions k4 s2 + BN + ReLU, 1x1 to the image."""
  image_shape: tuple
  width: int
  stages: int

  @nn.compact
  def __call__(self, z: Array, train_mode: bool) -> Array:
    h, w, c = self.image_shape
    scale = 2**(self.stages - 1)
    h0, w0 = -(-h // scale), -(-w // scale)
    top = self.width * scale
    x = nn.Dense(top * h0 * w0, kernel_init=_kaiming)(z).reshape(z.shape[0], h0, w0, top)
    for i in range(1, self.stages):
      x = ConvTranspose4x4Stride2(top // 2**i, name=f'ConvTranspose_{i - 1}')(x)
      x = nn.relu(_batch_norm(train_mode)(x))
    x = nn.ConvTranspose(c, (1, 1), kernel_init=_kaiming,
                         name=f'ConvTranspose_{self.stages - 1}')(x)
    return x[:, :h, :w]


class VectorEncoder(nn.Module):
  """The encoder for feature vectors ``[B, D]``: ``layers`` x (Dense(``hidden``) without bias +
  BN + ReLU), the convolution blocks' pattern, then the mu and log sigma^2 heads."""
  latent_dim: int
  hidden: int
  layers: int = VECTOR_LAYERS

  @nn.compact
  def __call__(self, x: Array, train_mode: bool) -> tuple[Array, Array]:
    for _ in range(self.layers):
      x = nn.Dense(self.hidden, use_bias=False, kernel_init=_kaiming)(x)
      x = nn.relu(_batch_norm(train_mode)(x))
    mu = nn.Dense(self.latent_dim, kernel_init=_kaiming, name='mu')(x)
    logvar = nn.Dense(self.latent_dim, kernel_init=_kaiming, name='logvar')(x)
    return mu, logvar


class VectorDecoder(nn.Module):
  """The decoder for feature vectors: ``layers`` x (Dense(``hidden``) without bias + BN + ReLU),
  then a Dense with bias to the ``dim`` inputs (no activation, as the 1x1 transposed convolution
  of the image decoder: the target is the standardised vector)."""
  dim: int
  hidden: int
  layers: int = VECTOR_LAYERS

  @nn.compact
  def __call__(self, z: Array, train_mode: bool) -> Array:
    x = z
    for _ in range(self.layers):
      x = nn.Dense(self.hidden, use_bias=False, kernel_init=_kaiming)(x)
      x = nn.relu(_batch_norm(train_mode)(x))
    return nn.Dense(self.dim, kernel_init=_kaiming, name='out')(x)


class VAE(nn.Module):
  """The beta-VAE: ``(recon, z, mu, logvar) = VAE()(x, key, train_mode)``; convolutional for
  images ``(H, W, C)``, an MLP for feature vectors ``(D,)`` (:func:`is_vector`)."""
  image_shape: tuple
  latent_dim: int
  width: int

  def setup(self):
    if is_vector(self.image_shape):
      hidden = vector_hidden(self.width)
      self.encoder = VectorEncoder(self.latent_dim, hidden)
      self.decoder = VectorDecoder(int(self.image_shape[0]), hidden)
      return
    stages = num_stages(self.image_shape)
    self.encoder = Encoder(self.latent_dim, self.width, stages)
    self.decoder = Decoder(tuple(self.image_shape), self.width, stages)

  def __call__(self, x: Array, key: Array, train_mode: bool):
    mu, logvar = self.encoder(x, train_mode)
    z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(key, mu.shape, mu.dtype)
    return self.decoder(z, train_mode), z, mu, logvar

  def encode(self, x: Array, train_mode: bool) -> tuple[Array, Array]:
    return self.encoder(x, train_mode)


class Discriminator(nn.Module):
  """``latent -> 512 -> ReLU -> 512 -> ReLU -> 1``: the logit of "labeled"."""
  hidden: int = DISCRIMINATOR_HIDDEN

  @nn.compact
  def __call__(self, mu: Array) -> Array:
    x = nn.relu(nn.Dense(self.hidden, kernel_init=_kaiming)(mu))
    x = nn.relu(nn.Dense(self.hidden, kernel_init=_kaiming)(x))
    return nn.Dense(1, kernel_init=_kaiming)(x)[:, 0]


# ---- the losses (the authors' solver.py) --------------------------------------------------------

def kl_divergence(mu: Array, logvar: Array, reduction: str = 'sum') -> Array:
  """``-1/2 sum(1 + logvar - mu^2 - exp(logvar))`` over batch and latent dims (``'sum'``, the
  authors'), or that over the batch size (``'batch_mean'``)."""
  kl = -0.5 * jnp.sum(1.0 + logvar - mu**2 - jnp.exp(logvar))
  return kl if reduction == 'sum' else kl / mu.shape[0]


def vae_loss(x: Array, recon: Array, mu: Array, logvar: Array, beta: float,
             reduction: str = 'sum') -> Array:
  """Reconstruction MSE (mean over every element) + beta KL."""
  return jnp.mean((recon - x)**2) + beta * kl_divergence(mu, logvar, reduction)


def bce(logits: Array, target: float) -> Array:
  """Mean binary cross-entropy of ``sigmoid(logits)`` against a constant target (nn.BCELoss)."""
  return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, jnp.full_like(logits, target)))


def adversarial_loss(d_labeled: Array, d_unlabeled: Array) -> Array:
  """The VAE's adversarial term: both sets get target 1 (the VAE tries to make the unlabeled
  look labeled; 0 belongs to D's step only)."""
  return bce(d_labeled, 1.0) + bce(d_unlabeled, 1.0)


def discriminator_loss(d_labeled: Array, d_unlabeled: Array) -> Array:
  """D's loss: labeled -> 1, unlabeled -> 0."""
  return bce(d_labeled, 1.0) + bce(d_unlabeled, 0.0)


def query_scores(d_logits: Array) -> Array:
  """Higher = query first: the lowest D(mu), the most "unlabeled-looking"."""
  return -d_logits


# ---- initialisation -----------------------------------------------------------------------------

def kaiming_fill(shapes, key: Array):
  """Variables of the structure ``shapes`` (``jax.eval_shape`` of an ``init``): every kernel
  Kaiming normal over its fan-in (``prod(shape[:-1])``, as ``_kaiming``), biases 0, BatchNorm
  scales and variances 1, means 0. Drawn as one vector of normals: one random-number kernel to
  compile instead of one per parameter (XLA:CPU takes tens of seconds for ``module.init``)."""
  leaves, tree = jax.tree_util.tree_flatten_with_path(shapes)
  names = [str(getattr(path[-1], 'key', path[-1])) for path, _ in leaves]  # kernel, bias, ...
  kernels = [i for i, name in enumerate(names) if name == 'kernel']
  sizes = [math.prod(leaves[i][1].shape) for i in kernels]
  normals = jax.random.normal(key, (sum(sizes),), jnp.float32)
  out, offset = [], 0
  for i, ((_, leaf), name) in enumerate(zip(leaves, names)):
    if i in kernels:
      n = math.prod(leaf.shape)
      std = math.sqrt(2.0 / math.prod(leaf.shape[:-1]))
      out.append((normals[offset:offset + n] * std).reshape(leaf.shape).astype(leaf.dtype))
      offset += n
    elif name in ('scale', 'var'):
      out.append(jnp.ones(leaf.shape, leaf.dtype))
    else:  # biases, BatchNorm shifts and means
      out.append(jnp.zeros(leaf.shape, leaf.dtype))
  return jax.tree_util.tree_unflatten(tree, out)
