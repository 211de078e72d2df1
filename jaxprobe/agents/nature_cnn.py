"""Agent networks: the Nature DQN torso with a Q head or an actor-critic head.

Parameter trees match CleanRL's JAX networks so their checkpoints load as-is:
`Conv_0..2` (HWIO kernels, VALID), `Dense_0` (3136 -> 512) for the torso, then
`Dense_1` (512 -> A) for the Q head, or `policy` (512 -> A) and `value` (512 -> 1)
for the actor-critic head.

Observations arrive as envpool gives them: `(N, 4, 84, 84)`, values in [0, 255]
(uint8 or float). The transpose to NHWC and the division by 255 happen here, in
`NatureTorso`, and nowhere else.

The activation is a field so that saliency methods (guided backprop) swap the
ReLU without a second copy of the network; `conv` is a field so the convolution
implementation can change per backend while the parameter layout stays.
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

Activation = Callable[[jnp.ndarray], jnp.ndarray]


def _orthogonal(scale: float):
  return nn.initializers.orthogonal(scale)


def nature_torso(
  obs: jnp.ndarray, activation: Activation, conv: Callable[..., nn.Module], orthogonal_init: bool
) -> jnp.ndarray:
  """Conv 32 8x8/4, conv 64 4x4/2, conv 64 3x3/1, dense 512; activation after each.

  Called inside a network's compact `__call__`, so its layers are that network's
  own (top-level `Conv_0..2`, `Dense_0`, exactly where CleanRL keeps them).
  """
  # CleanRL's DQN uses Flax's default init; its PPO uses orthogonal(sqrt 2).
  init = dict(kernel_init=_orthogonal(np.sqrt(2)), bias_init=nn.initializers.zeros) if orthogonal_init else {}
  x = jnp.transpose(obs, (0, 2, 3, 1)).astype(jnp.float32) / 255.0
  for i, (features, k, s) in enumerate(((32, 8, 4), (64, 4, 2), (64, 3, 1))):
    x = conv(features, (k, k), strides=(s, s), padding="VALID", name=f"Conv_{i}", **init)(x)
    x = activation(x)
  x = x.reshape((x.shape[0], -1))  # H, W, C order, as CleanRL flattens
  return activation(nn.Dense(512, name="Dense_0", **init)(x))


class QNetwork(nn.Module):
  """Nature DQN: Q-values for each action. Same tree as CleanRL's `QNetwork`.

  With `num_quantiles` > 0 it is QR-DQN's network (Dabney et al. 2018): `Dense_1` gives that many
  quantiles of the return per action, stored action-major (output `a * num_quantiles + i`), and
  the Q-value is their mean, Q(s, a) = (1/K) sum_i theta_i(s, a).
  """

  num_actions: int
  activation: Activation = nn.relu
  conv: Callable[..., nn.Module] = nn.Conv
  num_quantiles: int = 0

  @nn.compact
  def __call__(self, obs: jnp.ndarray) -> dict[str, jnp.ndarray]:
    """Q-values `{"q": (N, A)}` of observations `(N, 4, 84, 84)` in [0, 255] (and `"quantiles"`
    `(N, A, K)` for QR-DQN)."""
    x = nature_torso(obs, self.activation, self.conv, orthogonal_init=False)
    if not self.num_quantiles:
      return {"q": nn.Dense(self.num_actions, name="Dense_1")(x)}
    out = nn.Dense(self.num_actions * self.num_quantiles, name="Dense_1")(x)
    quantiles = out.reshape(out.shape[0], self.num_actions, self.num_quantiles)
    return {"q": quantiles.mean(-1), "quantiles": quantiles}


class ActorCritic(nn.Module):
  """Policy logits and state value over the shared Nature torso (PPO / A2C family)."""

  num_actions: int
  activation: Activation = nn.relu
  conv: Callable[..., nn.Module] = nn.Conv

  @nn.compact
  def __call__(self, obs: jnp.ndarray) -> dict[str, jnp.ndarray]:
    """Policy logits `(N, A)` and state values `(N,)` of observations `(N, 4, 84, 84)` in [0, 255]."""
    x = nature_torso(obs, self.activation, self.conv, orthogonal_init=True)
    logits = nn.Dense(self.num_actions, kernel_init=_orthogonal(0.01), bias_init=nn.initializers.zeros, name="policy")(
      x
    )
    value = nn.Dense(1, kernel_init=_orthogonal(1.0), bias_init=nn.initializers.zeros, name="value")(x)
    return {"logits": logits, "value": value[:, 0]}
