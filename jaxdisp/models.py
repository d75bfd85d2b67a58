"""Models: the CIFAR ResNet18 of the paper and a small CNN for images; a linear head and an MLP for
feature vectors (``dataset.source=embeddings``).

All are Flax Linen modules split into a ``backbone`` (image -> penultimate features) and a
``head`` (features -> logits, with optional dropout), so acquisition functions can reuse the
features: k-center greedy and BADGE work on them, and a Monte-Carlo dropout pass can be the head
alone on features computed once (a matrix product instead of a forward pass per sample).
``model.dropout_layers = 'network'`` also puts dropout (the same rate) after every backbone stage
but the last -- each ResNet stage, each small-CNN block -- whose output goes straight into the
head's dropout; a stochastic forward pass (``Classifier.__call__`` with ``train=False,
stochastic=True``) then runs every dropout layer with BatchNorm in eval mode. With ``'head'`` the
backbone has no dropout layer at all, so those models are exactly what they were before the
option existed.

Both backbones can also return their stage outputs (``stages=True``: each ResNet stage, each
small-CNN block's conv-BN-ReLU output), for an auxiliary head trained alongside the task model
(``jaxdisp.train.aux_head``).

For feature vectors ``[B, D]``: ``linear`` is an identity backbone (``embed`` returns the
normalised input vectors themselves, so k-center greedy and BADGE work on the embeddings) under
the head: multinomial logistic regression, with dropout on the input vectors when
``model.dropout`` > 0. ``mlp`` is ``model.depth`` hidden Dense(``model.hidden``)-ReLU layers under
the head; ``'network'`` dropout goes after every hidden layer but the last, and ``stages=True``
returns each hidden layer's output ``[B, hidden]``. Neither has BatchNorm (the inputs are
standardised per dimension, ``jaxdisp.input_pipeline``).

BatchNorm takes an optional per-sample ``mask`` so the last, partly padded batch of an epoch
normalises over its real samples only (the same statistics as PyTorch's ``drop_last=False``).
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdisp.errors import ConfigError

Array = jax.Array
ModuleDef = Any

# He-normal over fan-out, the usual CIFAR ResNet initialisation.
conv_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


def _bn_mask(mask: Array | None) -> Array | None:
  """A per-sample [B] mask broadcast to NHWC, as flax BatchNorm expects."""
  return None if mask is None else mask[:, None, None, None]


class BasicBlock(nn.Module):
  """ResNet basic block: conv3x3-BN-ReLU-conv3x3-BN plus (projected) shortcut."""
  filters: int
  strides: int
  conv: ModuleDef
  norm: ModuleDef

  @nn.compact
  def __call__(self, x: Array, mask: Array | None) -> Array:
    m = _bn_mask(mask)
    y = self.conv(self.filters, (3, 3), (self.strides, self.strides))(x)
    y = nn.relu(self.norm()(y, mask=m))
    y = self.conv(self.filters, (3, 3))(y)
    y = self.norm()(y, mask=m)
    if self.strides != 1 or x.shape[-1] != self.filters:
      x = self.conv(self.filters, (1, 1), (self.strides, self.strides), name='shortcut_conv')(x)
      x = self.norm(name='shortcut_bn')(x, mask=m)
    return nn.relu(x + y)


class ResNetBackbone(nn.Module):
  """CIFAR ResNet (kuangliu/Cutout variant): 3x3 stride-1 stem, no max-pool, 4 stages."""
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  width: int = 64
  dtype: Any = jnp.float32
  dropout: float = 0.0  # after every stage but the last (model.dropout_layers='network')

  @nn.compact
  def __call__(self, x: Array, *, train: bool, mask: Array | None = None,
               stochastic: bool | None = None, stages: bool = False):
    """``stochastic``: dropout on (default: ``train``); BatchNorm follows ``train`` only.
    ``stages``: also return each stage's output (before its dropout), ``(pooled, (s1..s4))``."""
    stochastic = train if stochastic is None else stochastic
    outs = []
    conv = functools.partial(nn.Conv, use_bias=False, padding='SAME', kernel_init=conv_init,
                             dtype=self.dtype)
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9,
                             epsilon=1e-5, dtype=self.dtype)
    x = conv(self.width, (3, 3), name='stem_conv')(x)
    x = nn.relu(norm(name='stem_bn')(x, mask=_bn_mask(mask)))
    for stage, num_blocks in enumerate(self.stage_sizes):
      for block in range(num_blocks):
        strides = 2 if stage > 0 and block == 0 else 1
        x = BasicBlock(self.width * 2**stage, strides, conv, norm)(x, mask)
      outs.append(x)
      if self.dropout > 0 and stage < len(self.stage_sizes) - 1:
        x = nn.Dropout(self.dropout, deterministic=not stochastic)(x)
    pooled = jnp.mean(x, axis=(1, 2))  # global average pool (= 4x4 avg-pool on 32x32 inputs)
    return (pooled, tuple(outs)) if stages else pooled


class SmallCNNBackbone(nn.Module):
  """Three conv-BN-ReLU stages (widths w, 2w, 4w) with pooling: fast, for tests and demos."""
  width: int = 32
  dtype: Any = jnp.float32
  dropout: float = 0.0  # after every block but the last (model.dropout_layers='network')

  @nn.compact
  def __call__(self, x: Array, *, train: bool, mask: Array | None = None,
               stochastic: bool | None = None, stages: bool = False):
    """``stochastic``: dropout on (default: ``train``); BatchNorm follows ``train`` only.
    ``stages``: also return each block's conv-BN-ReLU output (before its pooling and dropout),
    ``(pooled, (b1, b2, b3))``."""
    stochastic = train if stochastic is None else stochastic
    outs = []
    for i in range(3):
      x = nn.Conv(self.width * 2**i, (3, 3), use_bias=False, kernel_init=conv_init,
                  dtype=self.dtype)(x)
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                       dtype=self.dtype)(x, mask=_bn_mask(mask))
      x = nn.relu(x)
      outs.append(x)
      if i < 2:
        x = nn.max_pool(x, (2, 2), (2, 2))
        if self.dropout > 0:
          x = nn.Dropout(self.dropout, deterministic=not stochastic)(x)
    pooled = jnp.mean(x, axis=(1, 2))
    return (pooled, tuple(outs)) if stages else pooled


class IdentityBackbone(nn.Module):
  """The backbone of ``model.name=linear``: the input vectors ``[B, D]`` are the features."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, *, train: bool, mask: Array | None = None,
               stochastic: bool | None = None, stages: bool = False):
    del train, mask, stochastic
    x = x.astype(self.dtype)
    return (x, ()) if stages else x


class MLPBackbone(nn.Module):
  """``depth`` hidden Dense(``hidden``)-ReLU layers on vectors ``[B, D]`` (``model.name=mlp``)."""
  hidden: int = 512
  depth: int = 1
  dtype: Any = jnp.float32
  dropout: float = 0.0  # after every hidden layer but the last (model.dropout_layers='network')

  @nn.compact
  def __call__(self, x: Array, *, train: bool, mask: Array | None = None,
               stochastic: bool | None = None, stages: bool = False):
    """``stochastic``: dropout on (default: ``train``). ``stages``: also return each hidden
    layer's output (before its dropout), ``(features, (h1, ..., h_depth))``."""
    del mask  # no BatchNorm
    stochastic = train if stochastic is None else stochastic
    outs = []
    for i in range(self.depth):
      x = nn.relu(nn.Dense(self.hidden, dtype=self.dtype, name=f'dense{i}')(x))
      outs.append(x)
      if self.dropout > 0 and i < self.depth - 1:
        x = nn.Dropout(self.dropout, deterministic=not stochastic)(x)
    return (x, tuple(outs)) if stages else x


class Head(nn.Module):
  """Dropout (rate 0 = none) and a linear classifier; logits are float32."""
  num_classes: int
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features: Array, *, deterministic: bool = True) -> Array:
    features = nn.Dropout(self.dropout, deterministic=deterministic or self.dropout == 0.0)(
        features)
    return nn.Dense(self.num_classes, dtype=self.dtype)(features).astype(jnp.float32)


class Classifier(nn.Module):
  """backbone + head. ``__call__`` gives logits; ``embed``/``classify`` expose the two halves."""
  backbone: nn.Module
  head: nn.Module

  def __call__(self, x: Array, *, train: bool, mask: Array | None = None,
               stochastic: bool | None = None) -> Array:
    """``stochastic``: every dropout layer on (default: ``train``; needs a ``'dropout'`` rng);
    BatchNorm follows ``train`` only, so ``train=False, stochastic=True`` is a stochastic
    forward pass that uses the running averages and updates nothing."""
    stochastic = train if stochastic is None else stochastic
    features = self.backbone(x, train=train, mask=mask, stochastic=stochastic)
    return self.head(features, deterministic=not stochastic)

  def embed(self, x: Array) -> Array:
    """Penultimate features in eval mode (float32)."""
    return self.backbone(x, train=False).astype(jnp.float32)

  def classify(self, features: Array, *, deterministic: bool = True) -> Array:
    return self.head(features, deterministic=deterministic)


IMAGE_MODELS = ('resnet18', 'small_cnn')  # uint8 images [N, H, W, C]
VECTOR_MODELS = ('linear', 'mlp')  # feature vectors [N, D] (dataset.source=embeddings)
MODELS = IMAGE_MODELS + VECTOR_MODELS
DROPOUT_LAYERS = ('head', 'network')  # model.dropout_layers
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def check_config(model_cfg, vectors: bool, source: str) -> None:
  """ConfigError unless ``model_cfg`` fits the inputs: an image model for images, ``linear`` or
  ``mlp`` for feature vectors (``vectors``); ``source`` names where the inputs come from."""
  if model_cfg.hidden < 1:
    raise ConfigError(f'model.hidden={model_cfg.hidden} must be >= 1 (units of the mlp\'s hidden '
                      'layers)')
  if model_cfg.depth < 1:
    raise ConfigError(f'model.depth={model_cfg.depth} must be >= 1 (hidden layers of '
                      'model.name=mlp; model.name=linear has none)')
  name = model_cfg.name
  if name in MODELS and (name in VECTOR_MODELS) != vectors:
    if vectors:
      raise ConfigError(f'model.name={name} is an image model, and {source} gives feature '
                        f'vectors: use model.name=linear or mlp')
    raise ConfigError(f'model.name={name} is a head for feature vectors '
                      f'(dataset.source=embeddings), and {source} gives images: use '
                      f'model.name=resnet18 or small_cnn')


def create_model(model_cfg, num_classes: int) -> Classifier:
  """Builds the classifier named by ``model_cfg.name`` (see ``MODELS``)."""
  if model_cfg.dtype not in DTYPES:
    raise ConfigError(f'model.dtype={model_cfg.dtype!r} is not one of {sorted(DTYPES)}')
  dtype = DTYPES[model_cfg.dtype]
  if model_cfg.dropout_layers not in DROPOUT_LAYERS:
    raise ConfigError(f'model.dropout_layers={model_cfg.dropout_layers!r} is not one of '
                      f'{list(DROPOUT_LAYERS)}')
  # 'head': the backbone gets no dropout layer (the models, and results, of before the option).
  rate = model_cfg.dropout if model_cfg.dropout_layers == 'network' else 0.0
  if model_cfg.name == 'resnet18':
    backbone = ResNetBackbone(width=model_cfg.width, dtype=dtype, dropout=rate)
  elif model_cfg.name == 'small_cnn':
    backbone = SmallCNNBackbone(width=model_cfg.width, dtype=dtype, dropout=rate)
  elif model_cfg.name == 'linear':
    backbone = IdentityBackbone(dtype=dtype)
  elif model_cfg.name == 'mlp':
    backbone = MLPBackbone(hidden=model_cfg.hidden, depth=model_cfg.depth, dtype=dtype,
                           dropout=rate)
  else:
    raise ConfigError(f'model.name={model_cfg.name!r} is not one of {list(MODELS)}')
  return Classifier(backbone=backbone, head=Head(num_classes, dropout=model_cfg.dropout,
                                                 dtype=dtype))
