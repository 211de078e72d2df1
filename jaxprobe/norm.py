"""Batch norm with a hand-written gradient: `nn.BatchNorm`'s variables and arithmetic, faster on XLA:CPU.

Autodiff of `nn.BatchNorm` leaves XLA:CPU several per-channel reductions over (batch, rows,
columns), each fused with whatever produced its input; with few channels (the decoder's 32
or 64) those loops run far below memory speed, and in the generator's training step they
cost more than some of its convolutions (benchmarks/README.md). Here the backward pass is
the closed form (two sums per channel, then one elementwise pass) and every per-channel
sum is taken over a wide row of several pixels' channels, then folded.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

_ROW = 512  # elements per row of a per-channel sum: enough for wide vector loops


def channel_sums(x: jnp.ndarray) -> jnp.ndarray:
  """Sum over every axis but the last: (..., C) -> (C,)."""
  c = x.shape[-1]
  rows, fold = x.size // c, 1
  while fold * c < _ROW and rows % (2 * fold) == 0:
    fold *= 2
  return x.reshape(rows // fold, fold * c).sum(0).reshape(fold, c).sum(0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def batch_norm(x: jnp.ndarray, scale: jnp.ndarray, bias: jnp.ndarray, epsilon: float):
  """Normalise x over all but its last axis with its own statistics: (y, mean, var).

  As `nn.BatchNorm` in training: var = max(E[x^2] - E[x]^2, 0), y = (x - mean) *
  scale / sqrt(var + epsilon) + bias.
  """
  return _batch_norm_fwd(x, scale, bias, epsilon)[0]


def _batch_norm_fwd(x, scale, bias, epsilon):
  n = x.size // x.shape[-1]
  mean = channel_sums(x) / n
  var = jnp.maximum(channel_sums(x * x) / n - mean * mean, 0.0)
  inv = jax.lax.rsqrt(var + epsilon)
  return ((x - mean) * (scale * inv) + bias, mean, var), (x, mean, inv, scale)


def _batch_norm_bwd(epsilon, res, cotangents):
  x, mean, inv, scale = res
  dy, dmean, dvar = cotangents
  n = x.size // x.shape[-1]
  xhat = (x - mean) * inv
  dbias, dscale = channel_sums(dy), channel_sums(dy * xhat)
  # d/dx of y through x, mean and var (var's clip at 0 is never active when var > 0), and of
  # the returned statistics themselves (zero in a loss that does not read them).
  dx = (scale * inv / n) * (n * dy - dbias - xhat * dscale) + (dmean + 2.0 * dvar * (x - mean)) / n
  return dx.astype(x.dtype), dscale, dbias


batch_norm.defvjp(_batch_norm_fwd, _batch_norm_bwd)


class BatchNorm(nn.Module):
  """`nn.BatchNorm(momentum, epsilon)` over the last axis, with the same variables
  (`params`: scale, bias; `batch_stats`: mean, var) and updates, and `batch_norm`'s gradient."""

  momentum: float = 0.99
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x: jnp.ndarray, use_running_average: bool) -> jnp.ndarray:
    """Normalises `x` over all but its last axis: batch statistics in training, running ones otherwise."""
    features = (x.shape[-1],)
    running_mean = self.variable("batch_stats", "mean", lambda s: jnp.zeros(s, jnp.float32), features)
    running_var = self.variable("batch_stats", "var", lambda s: jnp.ones(s, jnp.float32), features)
    scale = self.param("scale", nn.initializers.ones, features)
    bias = self.param("bias", nn.initializers.zeros, features)
    if use_running_average:
      return (x - running_mean.value) * (scale * jax.lax.rsqrt(running_var.value + self.epsilon)) + bias
    y, mean, var = batch_norm(x, scale, bias, self.epsilon)
    if not self.is_initializing():
      running_mean.value = self.momentum * running_mean.value + (1.0 - self.momentum) * mean
      running_var.value = self.momentum * running_var.value + (1.0 - self.momentum) * var
    return y
