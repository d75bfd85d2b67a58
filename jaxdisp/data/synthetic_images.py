"""Synthetic images: deterministic, class-structured oriented gratings that need no files."""

from __future__ import annotations

import numpy as np

from jaxdisp.data.dataset import Dataset
from jaxdisp.errors import DataError


def _synthetic_split(rng: np.random.Generator, n: int, num_classes: int, size: int):
  """Oriented gratings; class = (orientation, frequency) cell, colours and masks are nuisance."""
  labels = rng.integers(0, num_classes, n).astype(np.int32)
  num_orient = (num_classes + 1) // 2
  orient = (labels % num_orient) * (np.pi / num_orient)
  orient = orient + rng.normal(0.0, 0.16 * np.pi / num_orient, n)  # neighbouring classes overlap
  freq = np.where(labels < num_orient, 2.5, 4.5) + rng.normal(0.0, 0.45, n)  # cycles per image
  phase = rng.uniform(0, 2 * np.pi, n)
  yy, xx = np.meshgrid(np.linspace(-0.5, 0.5, size), np.linspace(-0.5, 0.5, size), indexing='ij')
  proj = (np.cos(orient)[:, None, None] * xx + np.sin(orient)[:, None, None] * yy)
  wave = np.sin(2 * np.pi * freq[:, None, None] * proj + phase[:, None, None])  # [n, H, W]
  # A soft blob of random position and radius decides where the grating shows.
  cy, cx = rng.uniform(-0.25, 0.25, (2, n))
  radius = rng.uniform(0.2, 0.45, n)
  dist = np.sqrt((yy - cy[:, None, None]) ** 2 + (xx - cx[:, None, None]) ** 2)
  blob = 1.0 / (1.0 + np.exp((dist - radius[:, None, None]) * 25.0))
  contrast = rng.uniform(0.25, 0.6, n)[:, None, None]
  background = rng.uniform(0.15, 0.85, (n, 3))  # colour independent of the class
  tint = rng.uniform(-1.0, 1.0, (n, 3))
  tint /= np.linalg.norm(tint, axis=1, keepdims=True) + 1e-6
  pattern = (contrast * blob * wave)[..., None] * (0.5 + 0.5 * np.abs(tint))[:, None, None, :]
  images = background[:, None, None, :] + pattern
  images += rng.normal(0.0, 0.12, images.shape)
  return np.clip(images * 255.0 + 0.5, 0, 255).astype(np.uint8), labels


def synthetic(num_train: int = 5000, num_test: int = 1000, num_classes: int = 10,
              image_size: int = 32, data_seed: int = 0, name: str = 'synthetic') -> Dataset:
  """A deterministic function of its arguments (same arguments => same bytes)."""
  if num_train < 1 or num_test < 1:
    raise DataError(f'synthetic data needs num_train, num_test >= 1 (got {num_train}, {num_test})')
  if not 2 <= num_classes <= 64:
    raise DataError(f'synthetic data supports 2..64 classes (got dataset.num_classes={num_classes})')
  if not 8 <= image_size <= 256:
    raise DataError(f'synthetic data supports image sizes 8..256 (got dataset.image_size={image_size})')
  train_rng, test_rng = (np.random.default_rng(s) for s in
                         np.random.SeedSequence(data_seed).spawn(2))
  chunks = [_synthetic_split(train_rng, min(4096, num_train - i), num_classes, image_size)
            for i in range(0, num_train, 4096)]
  train_images = np.concatenate([c[0] for c in chunks])
  train_labels = np.concatenate([c[1] for c in chunks])
  test_images, test_labels = _synthetic_split(test_rng, num_test, num_classes, image_size)
  return Dataset(
      name=name or 'synthetic', train_images=train_images, train_labels=train_labels,
      test_images=test_images, test_labels=test_labels,
      class_names=tuple(f'class_{c}' for c in range(num_classes)),
      train_ids=tuple(f'train/{i}' for i in range(num_train)))
