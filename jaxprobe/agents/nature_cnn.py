"""Agent networks: the Nature DQN torso with a Q head or an actor-critic head.

Parameter trees match CleanRL's JAX networks so their checkpoints load as-is:
`Conv_0..2` (HWIO kernels, VALID), `Dense_0` (3136 -> 512) for the torso, then
`Dense_1` (512 -> A) for the Q head, or `policy` (512 -> A) and `value` (512 -> 1)
for the actor-critic head. Dopamine's networks are the same with SAME padding (`Dense_0`
7744 -> 512): the Q head as above, its distributional heads in `QNetwork`, and IQN's
`ImplicitQuantileNetwork`, whose trees are Dopamine's own.

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
import jax
import jax.numpy as jnp
import numpy as np

Activation = Callable[[jnp.ndarray], jnp.ndarray]


def _orthogonal(scale: float):
  return nn.initializers.orthogonal(scale)


def nature_convs(
  obs: jnp.ndarray, activation: Activation, conv: Callable[..., nn.Module], padding: str, init: dict
) -> jnp.ndarray:
  """Conv 32 8x8/4, conv 64 4x4/2, conv 64 3x3/1, activation after each, flattened: `(N, 3136)`
  VALID, `(N, 7744)` SAME.

  Called inside a network's compact `__call__`, so its layers are that network's
  own (top-level `Conv_0..2`, exactly where CleanRL and Dopamine keep them).
  """
  x = jnp.transpose(obs, (0, 2, 3, 1)).astype(jnp.float32) / 255.0
  for i, (features, k, s) in enumerate(((32, 8, 4), (64, 4, 2), (64, 3, 1))):
    x = conv(features, (k, k), strides=(s, s), padding=padding, name=f"Conv_{i}", **init)(x)
    x = activation(x)
  return x.reshape((x.shape[0], -1))  # H, W, C order, as CleanRL and Dopamine flatten


def nature_torso(
  obs: jnp.ndarray,
  activation: Activation,
  conv: Callable[..., nn.Module],
  orthogonal_init: bool,
  padding: str = "VALID",
) -> jnp.ndarray:
  """`nature_convs`, then dense 512 (`Dense_0`) and the activation: `(N, 512)`."""
  # CleanRL's DQN uses Flax's default init; its PPO uses orthogonal(sqrt 2).
  init = dict(kernel_init=_orthogonal(np.sqrt(2)), bias_init=nn.initializers.zeros) if orthogonal_init else {}
  x = nature_convs(obs, activation, conv, padding, init)
  return activation(nn.Dense(512, name="Dense_0", **init)(x))


class QNetwork(nn.Module):
  """Nature DQN: Q-values for each action. Same tree as CleanRL's `QNetwork`.

  With `num_quantiles` > 0 it is QR-DQN's network (Dabney et al. 2018): `Dense_1` gives that many
  quantiles of the return per action, stored action-major (output `a * num_quantiles + i`), and
  the Q-value is their mean, Q(s, a) = (1/K) sum_i theta_i(s, a).

  With a `support` (z_1..z_K) it is C51's categorical head (Bellemare et al. 2017), also
  action-major: p_i(s, a) = softmax_i(logits(s, a)), Q(s, a) = sum_i p_i(s, a) z_i.
  """

  num_actions: int
  activation: Activation = nn.relu
  conv: Callable[..., nn.Module] = nn.Conv
  num_quantiles: int = 0
  support: tuple[float, ...] = ()
  padding: str = "VALID"

  @nn.compact
  def __call__(self, obs: jnp.ndarray) -> dict[str, jnp.ndarray]:
    """Q-values `{"q": (N, A)}` of observations `(N, 4, 84, 84)` in [0, 255] (and `"quantiles"`
    `(N, A, K)` for QR-DQN, `"probabilities"` `(N, A, K)` for C51)."""
    x = nature_torso(obs, self.activation, self.conv, orthogonal_init=False, padding=self.padding)
    atoms = self.num_quantiles or len(self.support)
    if not atoms:
      return {"q": nn.Dense(self.num_actions, name="Dense_1")(x)}
    out = nn.Dense(self.num_actions * atoms, name="Dense_1")(x)
    out = out.reshape(out.shape[0], self.num_actions, atoms)
    if self.num_quantiles:
      return {"q": out.mean(-1), "quantiles": out}
    probabilities = nn.softmax(out)
    return {"q": probabilities @ jnp.asarray(self.support, jnp.float32), "probabilities": probabilities}


IQN_KEY = 0  # the fixed PRNG key of `ImplicitQuantileNetwork`'s tau samples


def iqn_taus(num_taus: int) -> jnp.ndarray:
  """The quantile levels `(T,)` IQN's Q-values average over: drawn from U(0, 1) with `IQN_KEY`,
  as Dopamine's network draws them from the key it is given."""
  return jax.random.uniform(jax.random.PRNGKey(IQN_KEY), (num_taus, 1))[:, 0]


class ImplicitQuantileNetwork(nn.Module):
  """IQN (Dabney et al. 2018, "Implicit Quantile Networks"), Dopamine's tree: the quantile
  Z_tau(s, a) of the return at level tau, for the fixed levels `taus` (imports draw 32 from
  U(0, 1) with the key `IQN_KEY`: `iqn_taus`); Q(s, a) = (1/T) sum_t Z_tau_t(s, a), so the
  network is deterministic.

  psi(s) = the SAME-padded convolutions `(N, 7744)`;
  phi(tau)_j = activation(sum_i cos(pi * i * tau) w_ij + b_j), i = 1..embedding_dim (`Dense_0`);
  Z_tau(s, .) = `Dense_2`(activation(`Dense_1`(psi(s) * phi(tau)))).
  """

  num_actions: int
  embedding_dim: int = 64
  taus: tuple[float, ...] = ()
  activation: Activation = nn.relu
  conv: Callable[..., nn.Module] = nn.Conv
  padding: str = "SAME"

  @nn.compact
  def __call__(self, obs: jnp.ndarray) -> dict[str, jnp.ndarray]:
    """Q-values `{"q": (N, A)}` and `"quantiles"` `(N, A, T)` at the levels `taus`."""
    psi = nature_convs(obs, self.activation, self.conv, self.padding, {})
    taus = jnp.asarray(self.taus, jnp.float32)[:, None]
    embedding = jnp.cos(jnp.arange(1, self.embedding_dim + 1, dtype=jnp.float32) * jnp.pi * taus)
    phi = self.activation(nn.Dense(psi.shape[-1], name="Dense_0")(embedding))  # (T, 7744)
    x = self.activation(nn.Dense(512, name="Dense_1")(psi[:, None, :] * phi[None]))  # (N, T, 512)
    z = nn.Dense(self.num_actions, name="Dense_2")(x)  # (N, T, A)
    return {"q": z.mean(1), "quantiles": jnp.swapaxes(z, 1, 2)}


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
