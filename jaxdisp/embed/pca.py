"""Standardisation and PCA of embeddings, a chunk of rows at a time (float64 moments, a float32
Gram matrix eigendecomposed in float64, each axis' sign fixed), so memory stays bounded by the
output and the projection is deterministic."""

from __future__ import annotations

import numpy as np


def standardize_stats(x: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
  """Per-column (mean, std) of ``x`` in float64, a chunk of rows at a time; a constant column
  gets std 1 (it stays 0 after centring)."""
  n = x.shape[0]
  total, squares = np.zeros(x.shape[1]), np.zeros(x.shape[1])
  for a in range(0, n, chunk):
    block = np.asarray(x[a:a + chunk], np.float64)
    total += block.sum(0)
    squares += (block * block).sum(0)
  mean = total / n
  std = np.sqrt(np.maximum(squares / n - mean * mean, 0.0))
  return mean, np.where(std > 1e-6 * max(float(std.max()), 1e-30), std, 1.0)


def fit_pca(x: np.ndarray, dim: int, chunk: int = 4096) -> np.ndarray:
  """The first ``dim`` principal axes ``[D, dim]`` of the rows ``x [N, D]``, which must be centred
  (standardised): ``x^T x / (N - 1)`` accumulated in float32 a chunk of rows at a time and
  eigendecomposed in float64. Each axis' sign is fixed (its largest-magnitude entry positive),
  so that the projection is deterministic."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  gram = jax.jit(lambda acc, b: acc + b.T @ b)
  cov = jnp.zeros((x.shape[1],) * 2, jnp.float32)
  for a in range(0, x.shape[0], chunk):
    cov = gram(cov, jnp.asarray(x[a:a + chunk], jnp.float32))
  cov = np.asarray(cov, np.float64) / max(x.shape[0] - 1, 1)
  eigvals, eigvecs = np.linalg.eigh((cov + cov.T) / 2)
  axes = eigvecs[:, np.argsort(eigvals)[::-1][:dim]]
  signs = np.sign(axes[np.argmax(np.abs(axes), 0), np.arange(dim)])
  return (axes * np.where(signs == 0, 1.0, signs)).astype(np.float32)


def finish(x_train: np.ndarray, x_test: np.ndarray, pca_dim: int, dtype: str):
  """(x_train, x_test) standardised with the training rows' statistics, projected on their
  first ``pca_dim`` principal axes when ``pca_dim`` > 0, as ``dtype``."""
  mu, sd = standardize_stats(x_train)
  axes = None
  if pca_dim:
    x_train = _transform(x_train, mu, sd, None, np.float32)
    x_test = _transform(x_test, mu, sd, None, np.float32)
    axes = fit_pca(x_train, pca_dim)
    mu, sd = np.zeros(x_train.shape[1]), np.ones(x_train.shape[1])
  return (_transform(x_train, mu, sd, axes, dtype), _transform(x_test, mu, sd, axes, dtype))


def _transform(x: np.ndarray, mean, std, axes, dtype, chunk: int = 4096) -> np.ndarray:
  """``((x - mean) / std) [@ axes]`` as a new ``dtype`` array, computed a chunk of rows at a
  time (no float32 copy of the whole ``x``)."""
  dim = x.shape[1] if axes is None else axes.shape[1]
  out = np.empty((x.shape[0], dim), dtype)
  mean, scale = mean.astype(np.float32), (1.0 / std).astype(np.float32)
  for a in range(0, x.shape[0], chunk):
    block = (x[a:a + chunk] - mean) * scale
    out[a:a + chunk] = block if axes is None else block @ axes
  return out
