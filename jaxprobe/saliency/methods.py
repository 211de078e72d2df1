"""Saliency of an agent's output with respect to its input frames (docs/saliency.md).

Every method takes the agent's spec (anything with `apply(params, obs,
activation=...)` and `action_head`), its params, a batch of observations
`(N, 4, 84, 84)` in [0, 255], and the output to explain:
  head:   "q" / "logits" (an action's value or logit) or "value"; default: the action head
  action: int or `(N,)` ints; default: each state's greedy action (ignored for "value")
and returns a map the shape of `obs`. All are pure and jit/vmap-friendly (make
`agent` and `head` static under jit).

`saliency_mask` turns a map into the generator's loss weight M(x) (docs/saliency.md,
section 'The saliency mask M(x)').
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxprobe.envs import FRAME_SIZE

METHODS = ("guided", "gradient", "smoothgrad", "integrated", "perturbation")


@jax.custom_vjp
def guided_relu(x: jnp.ndarray) -> jnp.ndarray:
  """ReLU whose backward pass lets through only positive gradients at positive inputs."""
  return jnp.maximum(x, 0)


def _guided_relu_fwd(x):
  return jnp.maximum(x, 0), x


def _guided_relu_bwd(x, g):
  # Nonlinear in the cotangent, which is why this is a custom_vjp and not a custom_jvp.
  return ((x > 0) * jnp.maximum(g, 0),)


guided_relu.defvjp(_guided_relu_fwd, _guided_relu_bwd)


def explained_output(agent: Any, outputs: dict[str, jnp.ndarray], head: str | None, action: Any) -> jnp.ndarray:
  """The `(N,)` scalars being explained: one action's entry of `head`, or the value."""
  head = head or agent.action_head
  if head not in outputs:
    raise ValueError(f"agent has no output '{head}'; it has {sorted(outputs)}")
  out = outputs[head]
  if out.ndim == 1:
    return out
  if action is None:
    action = jnp.argmax(outputs[agent.action_head], axis=-1)
  action = jnp.broadcast_to(jnp.asarray(action), out.shape[:1])
  return jnp.take_along_axis(out, action[:, None], axis=-1)[:, 0]


def _fixed_action(agent, params, obs, head, action):
  # The greedy action is read once on the real input, so every method explains the same output.
  if action is None and (head or agent.action_head) != "value":
    action = jnp.argmax(agent.apply(params, obs)[agent.action_head], axis=-1)
  return action


def _input_gradient(agent, params, obs, head, action, activation: Callable) -> jnp.ndarray:
  def total(x):
    return explained_output(agent, agent.apply(params, x, activation=activation), head, action).sum()

  # States are independent, so the gradient of the sum is each state's own gradient.
  return jax.grad(total)(obs.astype(jnp.float32))


def gradient(agent, params, obs, head: str | None = None, action=None) -> jnp.ndarray:
  """Plain gradient d output / d input."""
  action = _fixed_action(agent, params, obs, head, action)
  return _input_gradient(agent, params, obs, head, action, nn.relu)


def guided_backprop(agent, params, obs, head: str | None = None, action=None) -> jnp.ndarray:
  """Guided backpropagation (Springenberg et al. 2014) through the agent's ReLUs."""
  action = _fixed_action(agent, params, obs, head, action)
  return _input_gradient(agent, params, obs, head, action, guided_relu)


def smoothgrad(
  agent,
  params,
  obs,
  key: jax.Array,
  head: str | None = None,
  action=None,
  num_samples: int = 16,
  noise_scale: float = 0.15,
) -> jnp.ndarray:
  """Mean gradient over inputs with Gaussian noise of std `noise_scale` x 255 (Smilkov et al. 2017)."""
  action = _fixed_action(agent, params, obs, head, action)
  noise = jax.random.normal(key, (num_samples, *obs.shape)) * noise_scale * 255.0
  noisy = (obs.astype(jnp.float32)[None] + noise).reshape(-1, *obs.shape[1:])
  tiled = None if action is None else jnp.tile(jnp.broadcast_to(action, obs.shape[:1]), num_samples)
  grads = _input_gradient(agent, params, noisy, head, tiled, nn.relu)
  return grads.reshape(num_samples, *obs.shape).mean(0)


def integrated_gradients(
  agent, params, obs, head: str | None = None, action=None, baseline: jnp.ndarray | None = None, num_steps: int = 32
) -> jnp.ndarray:
  """(x - x0) times the mean gradient along the straight path from x0 to x (Sundararajan et al. 2017).

  Midpoint rule over `num_steps`; attributions sum to f(x) - f(x0) up to the
  rule's error. The default baseline is the black frame.
  """
  action = _fixed_action(agent, params, obs, head, action)
  x = obs.astype(jnp.float32)
  x0 = jnp.zeros_like(x) if baseline is None else jnp.broadcast_to(baseline, x.shape).astype(jnp.float32)
  alphas = (jnp.arange(num_steps, dtype=jnp.float32) + 0.5) / num_steps
  path = (x0[None] + alphas[:, None, None, None, None] * (x - x0)[None]).reshape(-1, *x.shape[1:])
  tiled = None if action is None else jnp.tile(jnp.broadcast_to(action, x.shape[:1]), num_steps)
  grads = _input_gradient(agent, params, path, head, tiled, nn.relu)
  return (x - x0) * grads.reshape(num_steps, *x.shape).mean(0)


def gaussian_blur(frames: jnp.ndarray, sigma: float) -> jnp.ndarray:
  """Separable Gaussian blur over the last two axes (edge-padded)."""
  radius = max(1, int(3 * sigma))
  taps = jnp.exp(-0.5 * (jnp.arange(-radius, radius + 1) / sigma) ** 2)
  taps = taps / taps.sum()

  def blur_axis(x, axis):
    pad = [(0, 0)] * x.ndim
    pad[axis] = (radius, radius)
    xp = jnp.pad(x, pad, mode="edge")
    n = x.shape[axis]
    return sum(taps[i] * jax.lax.slice_in_dim(xp, i, i + n, axis=axis) for i in range(2 * radius + 1))

  return blur_axis(blur_axis(frames, -1), -2)


def perturbation_masks(size: int = FRAME_SIZE, stride: int = 5, sigma: float = 5.0) -> jnp.ndarray:
  """Gaussian masks centred on a grid every `stride` pixels: `(G, G, size, size)` in [0, 1]."""
  centres = jnp.arange(0, size, stride, dtype=jnp.float32)
  yy, xx = jnp.meshgrid(jnp.arange(size, dtype=jnp.float32), jnp.arange(size, dtype=jnp.float32), indexing="ij")
  d2 = (yy[None, None] - centres[:, None, None, None]) ** 2 + (xx[None, None] - centres[None, :, None, None]) ** 2
  return jnp.exp(-d2 / (2 * sigma**2))


def perturbation_scores(
  agent,
  params,
  obs,
  head: str | None = None,
  action=None,
  stride: int = 5,
  sigma: float = 5.0,
  blur_sigma: float = 3.0,
  chunk: int = 64,
) -> jnp.ndarray:
  """Greydanus et al. 2018: per mask, 0.5 (f(x) - f(x'))^2 where x' = x (1 - M) + blur(x) M.

  `(N, G, G)` scores for Gaussian masks on a G x G grid, the same mask on every
  frame of the stack. All masks of a state go through the network as batched
  forward passes of `chunk` masked states.
  """
  action = _fixed_action(agent, params, obs, head, action)
  x = obs.astype(jnp.float32)
  masks = perturbation_masks(x.shape[-1], stride, sigma)
  g = masks.shape[0]
  flat = masks.reshape(g * g, 1, *x.shape[-2:])
  pad = (-flat.shape[0]) % chunk
  chunks = jnp.concatenate([flat, jnp.zeros((pad, *flat.shape[1:]))]).reshape(-1, chunk, *flat.shape[1:])
  base = explained_output(agent, agent.apply(params, x), head, action)
  actions = None if action is None else jnp.broadcast_to(action, x.shape[:1])

  def state_scores(xi, blurred_i, base_i, action_i):
    def chunk_scores(m):
      a = None if action_i is None else jnp.broadcast_to(action_i, m.shape[:1])
      out = explained_output(agent, agent.apply(params, xi[None] * (1 - m) + blurred_i[None] * m), head, a)
      return 0.5 * (out - base_i) ** 2

    return jax.lax.map(chunk_scores, chunks).reshape(-1)[: g * g].reshape(g, g)

  return jax.vmap(state_scores, in_axes=(0, 0, 0, None if actions is None else 0))(
    x, gaussian_blur(x, blur_sigma), base, actions
  )


def perturbation(
  agent, params, obs, head: str | None = None, action=None, stride: int = 5, sigma: float = 5.0, blur_sigma: float = 3.0
) -> jnp.ndarray:
  """Perturbation saliency as a map the shape of `obs`: each pixel gets the mask-weighted mean score."""
  scores = perturbation_scores(agent, params, obs, head, action, stride, sigma, blur_sigma)
  masks = perturbation_masks(obs.shape[-1], stride, sigma)
  heat = jnp.einsum("ngk,gkhw->nhw", scores, masks) / jnp.maximum(masks.sum((0, 1)), 1e-6)
  return jnp.broadcast_to(heat[:, None], obs.shape)


def box_blur(maps: jnp.ndarray, size: int = 5) -> jnp.ndarray:
  """Mean over a `size` x `size` window (zero padding) over the last two axes."""
  window = (1,) * (maps.ndim - 2) + (size, size)
  summed = jax.lax.reduce_window(maps, 0.0, jax.lax.add, window, (1,) * maps.ndim, "SAME")
  return summed / (size * size)


def normalise_per_state(maps: jnp.ndarray, eps: float = 1e-12) -> jnp.ndarray:
  """Scales each state's map (leading axis) so its maximum is 1; all-zero maps stay zero."""
  peak = jnp.max(maps.reshape(maps.shape[0], -1), axis=1)
  return maps / jnp.maximum(peak, eps).reshape((-1,) + (1,) * (maps.ndim - 1))


def saliency_mask(saliency: jnp.ndarray, blur_size: int = 5) -> jnp.ndarray:
  """M(x): |saliency| summed over the frame stack, box-blurred, normalised per state to [0, 1].

  `(N, 4, 84, 84)` -> `(N, 84, 84)`.
  """
  return normalise_per_state(box_blur(jnp.abs(saliency).sum(axis=1), blur_size))


def compute(
  method: str, agent, params, obs, key: jax.Array | None = None, head: str | None = None, action=None
) -> jnp.ndarray:
  """Dispatch by name (one of `METHODS`), for the CLI and configs."""
  if method == "guided":
    return guided_backprop(agent, params, obs, head, action)
  if method == "gradient":
    return gradient(agent, params, obs, head, action)
  if method == "smoothgrad":
    return smoothgrad(agent, params, obs, key if key is not None else jax.random.key(0), head, action)
  if method == "integrated":
    return integrated_gradients(agent, params, obs, head, action)
  if method == "perturbation":
    return perturbation(agent, params, obs, head, action)
  raise ValueError(f"unknown saliency method {method!r}; known: {', '.join(METHODS)}")
