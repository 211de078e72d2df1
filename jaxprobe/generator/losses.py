"""The generator's loss L = L_p + eta * L_a + lambda * KL, each summed per state (docs/generator.md, 'Loss').

Every term is a sum over one state's elements, averaged over the batch, so eta
and lambda keep the paper's meaning ("relative to a summed squared error"):
- `L_p`: sum over pixels and colour channels of w (1 + beta * M(x)) (x - x')^2, with M the
  agent's saliency mask of the real state, a constant for the generator, and w the object
  weights (`object_weights`; all 1 unless an object share is asked for);
- `L_a`: sum over outputs of (A(x) - A(x'))^2, A the frozen agent's outputs (Q-values, or
  policy logits for actor-critic agents) on the real state and on the reconstruction, each
  vector optionally centred on its mean over actions (`perception`), or
  tau^2 KL(softmax(A(x)/tau) || softmax(A(x')/tau)) (`perception_softmax`);
- KL: KL(N(mean, exp(logvar)) || N(0, I)), summed over latent dimensions.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from jaxprobe.collection.objects import ObjectMeasure


def reconstruction(
  real: chex.Array, recon: chex.Array, mask: chex.Array, beta: float, weights: chex.Array | None = None
) -> chex.Array:
  """Saliency-weighted squared error per state: `(N, H, W, C)` images, `(N, H, W)` mask -> `(N,)`.

  `weights` `(N, H, W, C)` multiplies each element's term (`object_weights`); None: all 1.
  """
  chex.assert_equal_shape([real, recon])
  chex.assert_equal_shape([real[..., 0], mask])
  weight = (1.0 + beta * jax.lax.stop_gradient(mask))[..., None]
  if weights is not None:
    chex.assert_equal_shape([real, weights])
    weight = weight * jax.lax.stop_gradient(weights)
  return jnp.sum(weight * (real - recon) ** 2, axis=(1, 2, 3))


def object_weights(
  real: chex.Array,
  background: chex.Array,
  share: float,
  differ: float = ObjectMeasure.differ,
  recon: chex.Array | None = None,
) -> chex.Array:
  """Weights that give a state's object pixels `share` of its reconstruction loss: `(N, H, W, 3F)`.

  Object pixels are those of a frame where some channel differs from `background` `(H, W, 3)`
  (in [0, 1], like `real`) by more than `differ` (`collection.objects`); with `recon` given, also
  those where the reconstruction's does, so a smear or trail it draws on the background weighs as
  much as a missed object (the precision of docs/evaluation.md). In a state with `k` of
  its `P` frame pixels on objects they weigh `share * P / k` and the others
  `(1 - share) * P / (P - k)`, so the weights still sum to `P` and eta and lambda keep their
  meaning; a state without objects keeps weight 1. A 4-pixel ball among 7,056 pixels of a
  frame otherwise weighs almost nothing against the background (docs/generator.md, 'Loss').
  """
  n, h, w, c = real.shape
  chex.assert_shape(background, (h, w, 3))

  def differs(stacks):  # (N, H, W, F): some channel of a frame's pixel is off the background
    return (jnp.abs(stacks.reshape(n, h, w, c // 3, 3) - background[:, :, None, :]) > differ).any(-1)

  on_object = differs(real)
  if recon is not None:
    chex.assert_equal_shape([real, recon])
    on_object = on_object | differs(jax.lax.stop_gradient(recon))
  pixels = h * w * (c // 3)
  k = on_object.sum(axis=(1, 2, 3), keepdims=True).astype(real.dtype)
  w_object = share * pixels / jnp.maximum(k, 1.0)
  w_rest = (1.0 - share) * pixels / jnp.maximum(pixels - k, 1.0)
  frame_weights = jnp.where(k > 0, jnp.where(on_object, w_object, w_rest), 1.0)
  return jnp.repeat(frame_weights, 3, axis=-1)


def perception(real_outputs: chex.Array, recon_outputs: chex.Array, centred: bool = False) -> chex.Array:
  """Squared distance of the agent's output vectors per state: `(N, A)` -> `(N,)`.

  `centred` subtracts each vector's mean over actions first, so only the differences between
  actions count (what the greedy action and the policy's softmax depend on). The plain distance
  is the centred one plus A * (difference of the means)^2: for a Q agent whose values sit close
  together, that level term is most of the plain loss.
  """
  chex.assert_equal_shape([real_outputs, recon_outputs])
  diff = jax.lax.stop_gradient(real_outputs) - recon_outputs
  if centred:
    diff = diff - jnp.mean(diff, axis=-1, keepdims=True)
  return jnp.sum(diff**2, axis=-1)


def perception_softmax(real_outputs: chex.Array, recon_outputs: chex.Array, temperature: float) -> chex.Array:
  """tau^2 KL(softmax(real / tau) || softmax(recon / tau)) per state: `(N, A)` -> `(N,)`.

  The distillation loss (Hinton et al. 2015, "Distilling the Knowledge in a Neural Network", with
  its tau^2 factor). For differences d = recon - real much smaller than tau it is
  (1/2) sum_a p_a (d_a - sum_b p_b d_b)^2 with p = softmax(real / tau): the centred distance
  weighted by how near each action is to the best, so with tau about the gap between the best
  actions the loss spends itself on their order, which decides the greedy action; a shift of
  every output costs nothing. Beyond tau it grows linearly, not quadratically.
  """
  chex.assert_equal_shape([real_outputs, recon_outputs])
  log_p = jax.nn.log_softmax(jax.lax.stop_gradient(real_outputs) / temperature, axis=-1)
  log_q = jax.nn.log_softmax(recon_outputs / temperature, axis=-1)
  return temperature**2 * jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)


def kl_to_standard_normal(mean: chex.Array, logvar: chex.Array) -> chex.Array:
  """KL(N(mean, exp(logvar)) || N(0, I)) per state: `(N, D)` -> `(N,)`."""
  chex.assert_equal_shape([mean, logvar])
  return 0.5 * jnp.sum(jnp.exp(logvar) + mean**2 - 1.0 - logvar, axis=-1)


def total(l_p: chex.Array, l_a: chex.Array, kl: chex.Array, eta: float, lam: float) -> chex.Array:
  """The batch mean of L_p + eta * L_a + lambda * KL: three `(N,)` terms -> a scalar."""
  return jnp.mean(l_p + eta * l_a + lam * kl)
