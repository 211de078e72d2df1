"""Keeping a batch of searches apart: a kernel repulsion between the rows (docs/search.md, 'Diversity').

The rows of a search batch are optimised together, so a term that couples them costs one (n, n)
kernel matrix per step. Without one, every row of a target slides to the same minimum.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

# Rows that start equal have equal gradients under any smooth kernel of their distance, and would
# stay equal: the kernel is evaluated at u_i + JITTER * xi_i, with xi_i a fixed standard normal
# vector per row. That breaks the tie and moves the distance between two rows by about
# JITTER * sqrt(2D) (0.14 for D = 100), against sqrt(2D) = 14 between two typical real states.
JITTER = 1e-2


def repulsion(u: chex.Array) -> chex.Array:
  """Each row's mean kernel similarity to the other rows: `(n, D)` standardised latents -> `(n,)`, in [0, 1].

    R_i = 1/(n-1) sum_{j != i} exp(-||u~_i - u~_j||^2 / h^2),   u~_i = u_i + JITTER * xi_i
    h^2 = 2D / log(n)

  In standardised latents every coordinate has unit variance over the real states, so two random
  real states lie ||u - u'||^2 = 2D apart on average; with this bandwidth two rows that far apart
  have similarity 1/n, and rows much closer than that repel. The bandwidth's log(n) is the scaling
  of Stein variational gradient descent's (Liu & Wang, 2016, Section 5), but fixed by the data's
  scale rather than re-estimated from the batch each step, so `sum_i R_i` is one energy that the
  search lowers, and it falls as the rows spread. Rows are centred before the Gram matrix, so
  nearly equal rows keep their distances in float32. A batch of one row has nothing to repel: R = 0.
  """
  chex.assert_rank(u, 2)
  n, d = u.shape
  if n < 2:
    return jnp.zeros(n, u.dtype)
  v = u + JITTER * jax.random.normal(jax.random.key(0), u.shape, u.dtype)
  v = v - jnp.mean(v, axis=0)
  sq = jnp.sum(v * v, axis=1)
  d2 = jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * v @ v.T, 0.0)
  k = jnp.exp(-d2 * (jnp.log(n) / (2.0 * d))) * (1.0 - jnp.eye(n, dtype=u.dtype))
  return jnp.sum(k, axis=1) / (n - 1)
