"""The generator's loss L = L_p + eta * L_a + lambda * KL, each summed per state (docs/generator.md, 'Loss').

Every term is a sum over one state's elements, averaged over the batch, so eta
and lambda keep the paper's meaning ("relative to a summed squared error"):
- `L_p`: sum over pixels and colour channels of (1 + beta * M(x)) (x - x')^2, with M the
  agent's saliency mask of the real state, a constant for the generator;
- `L_a`: sum over outputs of (A(x) - A(x'))^2, A the frozen agent's outputs (Q-values, or
  policy logits for actor-critic agents) on the real state and on the reconstruction;
- KL: KL(N(mean, exp(logvar)) || N(0, I)), summed over latent dimensions.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp


def reconstruction(real: chex.Array, recon: chex.Array, mask: chex.Array, beta: float) -> chex.Array:
  """Saliency-weighted squared error per state: `(N, H, W, C)` images, `(N, H, W)` mask -> `(N,)`."""
  chex.assert_equal_shape([real, recon])
  chex.assert_equal_shape([real[..., 0], mask])
  weight = 1.0 + beta * jax.lax.stop_gradient(mask)
  return jnp.sum(weight[..., None] * (real - recon) ** 2, axis=(1, 2, 3))


def perception(real_outputs: chex.Array, recon_outputs: chex.Array) -> chex.Array:
  """Squared distance of the agent's output vectors per state: `(N, A)` -> `(N,)`."""
  chex.assert_equal_shape([real_outputs, recon_outputs])
  return jnp.sum((jax.lax.stop_gradient(real_outputs) - recon_outputs) ** 2, axis=-1)


def kl_to_standard_normal(mean: chex.Array, logvar: chex.Array) -> chex.Array:
  """KL(N(mean, exp(logvar)) || N(0, I)) per state: `(N, D)` -> `(N,)`."""
  chex.assert_equal_shape([mean, logvar])
  return 0.5 * jnp.sum(jnp.exp(logvar) + mean**2 - 1.0 - logvar, axis=-1)


def total(l_p: chex.Array, l_a: chex.Array, kl: chex.Array, eta: float, lam: float) -> chex.Array:
  """The batch mean of L_p + eta * L_a + lambda * KL: three `(N,)` terms -> a scalar."""
  return jnp.mean(l_p + eta * l_a + lam * kl)
