"""The one agent interface every later stage uses.

An agent is a frozen `AgentSpec` (what network, how many actions, which game,
what observations; hashable, so it can be a static argument of `jit`) plus a
params pytree. Consumers call `spec.apply(params, obs)` and never build a
network themselves:

    agent = load_agent("jaxprobe/assets/agents/pong")
    out = agent.spec.apply(agent.params, obs)   # {"q": (N, A)} or {"logits": (N, A), "value": (N,)}
                                                # (QR-DQN and IQN add "quantiles": (N, A, K), C51
                                                # "probabilities": (N, A, K); q is their mean / expectation)
    actions = act(agent.spec, agent.params, obs, key, epsilon=0.05)
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxprobe.agents.nature_cnn import ActorCritic, ImplicitQuantileNetwork, QNetwork
from jaxprobe.conv import conv_module
from jaxprobe.envs import AGENT_OBS_SHAPE
from jaxprobe.errors import UserError

Params = Any
KINDS = ("q", "actor_critic")
# Observations as envpool's Atari env gives them; the network transposes to NHWC.
OBS_FORMAT = "envpool-atari-grayscale-stack4-84x84-uint8-NCHW"


@dataclasses.dataclass(frozen=True)
class AgentSpec:
  """What a checkpoint needs to be rebuilt: network kind, action count, game, input format."""

  kind: str  # "q" (DQN family) or "actor_critic" (PPO / A2C family)
  num_actions: int
  env_id: str
  obs_format: str = OBS_FORMAT
  # QR-DQN: quantiles of the return per action (`nature_cnn.QNetwork`), q their mean; 0: Q-values.
  quantiles: int = 0
  # C51 / Rainbow: the returns z_1..z_K of a categorical head's atoms, q the expectation; (): none.
  support: tuple[float, ...] = ()
  # IQN (`nature_cnn.ImplicitQuantileNetwork`): the cosine embedding's size (0: not IQN) and the
  # fixed quantile levels q averages over (stored, so a saved agent reads the same on any jax).
  tau_embedding: int = 0
  taus: tuple[float, ...] = ()
  # The convolutions' padding: VALID (CleanRL, SB3, jaxprobe: Dense_0 3136 -> 512) or SAME (Dopamine: 7744).
  padding: str = "VALID"
  # How convolutions are computed (never what is stored): this backend's fastest, `jaxprobe.conv`.
  conv: Callable[..., nn.Module] = dataclasses.field(default_factory=conv_module, compare=True, repr=False)

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"agent kind must be one of {KINDS}, got {self.kind!r}")
    if (self.quantiles or self.support or self.tau_embedding) and self.kind != "q":
      raise ValueError("only Q agents have distributional heads")
    if sum(map(bool, (self.quantiles, self.support, self.tau_embedding))) > 1:
      raise ValueError("an agent has one head: quantiles, a categorical support or IQN's embedding")
    if self.padding not in ("VALID", "SAME"):
      raise ValueError(f"padding must be VALID or SAME, got {self.padding!r}")
    if bool(self.tau_embedding) != bool(self.taus) or not all(0.0 <= t <= 1.0 for t in self.taus):
      raise ValueError("IQN needs its embedding size and at least one quantile level in [0, 1]")
    if self.kind == "actor_critic" and self.padding != "VALID":
      raise ValueError("jaxprobe's actor-critic network has VALID padding only")

  @property
  def obs_shape(self) -> tuple[int, ...]:
    """The observation shape of one state: (4, 84, 84)."""
    return AGENT_OBS_SHAPE

  @property
  def action_head(self) -> str:
    """The output whose argmax is the agent's greedy action."""
    return "q" if self.kind == "q" else "logits"

  @property
  def heads(self) -> tuple[str, ...]:
    """The outputs `apply` returns, by name."""
    return ("q",) if self.kind == "q" else ("logits", "value")

  def network(self, activation: Callable = nn.relu) -> nn.Module:
    """The Flax module; `activation` replaces the ReLUs (guided backprop)."""
    if self.tau_embedding:
      return ImplicitQuantileNetwork(
        self.num_actions, self.tau_embedding, self.taus, activation, self.conv, self.padding
      )
    if self.kind == "q":
      return QNetwork(
        self.num_actions,
        activation,
        self.conv,
        num_quantiles=self.quantiles,
        support=self.support,
        padding=self.padding,
      )
    return ActorCritic(num_actions=self.num_actions, activation=activation, conv=self.conv)

  def init(self, key: jax.Array) -> Params:
    """Fresh params drawn with `key`."""
    return self.network().init(key, jnp.zeros((1, *self.obs_shape), jnp.uint8))

  def apply(self, params: Params, obs: jnp.ndarray, activation: Callable = nn.relu) -> dict[str, jnp.ndarray]:
    """Outputs for a batch of observations `(N, 4, 84, 84)` in [0, 255]."""
    return self.network(activation).apply(params, obs)

  def features(self, params: Params, obs: jnp.ndarray) -> jnp.ndarray:
    """The torso's output `(N, 512)` for a batch of observations: how the agent reads a state, before
    its heads (the ReLU of `Dense_0`; IQN's `Dense_1`, averaged over its quantile levels; docs/agents.md)."""
    layer = "Dense_1" if self.tau_embedding else "Dense_0"
    _, state = self.network().apply(params, obs, capture_intermediates=lambda module, _: module.name == layer)
    x = nn.relu(state["intermediates"][layer]["__call__"][0])
    return x.mean(1) if self.tau_embedding else x

  def to_json(self) -> dict[str, Any]:
    """The spec as the JSON an agent checkpoint stores: the head's fields only where they differ
    from their defaults (files older than a field lack it)."""
    head = {f.name: getattr(self, f.name) for f in _head_fields() if getattr(self, f.name) != f.default}
    head = {k: list(v) if isinstance(v, tuple) else v for k, v in head.items()}
    return dict(kind=self.kind, num_actions=self.num_actions, env_id=self.env_id, obs_format=self.obs_format, **head)

  @classmethod
  def from_json(cls, meta: dict[str, Any]) -> AgentSpec:
    """The spec `to_json` wrote (KeyError, TypeError or ValueError if a field is missing or wrong)."""
    # Each head field cast to its default's type; tuples hold floats.
    cast = lambda default, v: tuple(float(x) for x in v) if isinstance(default, tuple) else type(default)(v)
    head = {f.name: cast(f.default, meta[f.name]) for f in _head_fields() if f.name in meta}
    return cls(meta["kind"], int(meta["num_actions"]), meta["env_id"], meta["obs_format"], **head)


HEAD_FIELDS = ("quantiles", "support", "tau_embedding", "taus", "padding")  # which head and torso


def _head_fields() -> list[dataclasses.Field]:
  """The `HEAD_FIELDS` of `AgentSpec`, with their defaults."""
  return [f for f in dataclasses.fields(AgentSpec) if f.name in HEAD_FIELDS]


@dataclasses.dataclass(frozen=True)
class Agent:
  """A spec and its params; `metadata` is what the checkpoint says about its training."""

  spec: AgentSpec
  params: Params
  metadata: dict[str, Any] = dataclasses.field(default_factory=dict)


def greedy_actions(spec: AgentSpec, outputs: dict[str, jnp.ndarray]) -> jnp.ndarray:
  """Each state's greedy action: the argmax of the action head, `(N, A)` -> `(N,)`."""
  return jnp.argmax(outputs[spec.action_head], axis=-1)


def act(
  spec: AgentSpec, params: Params, obs: jnp.ndarray, key: jax.Array, epsilon: float | jnp.ndarray = 0.0
) -> jnp.ndarray:
  """Epsilon-greedy actions for a batch: greedy w.p. 1 - epsilon, else uniform."""
  greedy = greedy_actions(spec, spec.apply(params, obs))
  explore_key, action_key = jax.random.split(key)
  explore = jax.random.uniform(explore_key, greedy.shape) < epsilon
  random = jax.random.randint(action_key, greedy.shape, 0, spec.num_actions)
  return jnp.where(explore, random, greedy)


def sample_actions(spec: AgentSpec, params: Params, obs: jnp.ndarray, key: jax.Array) -> jnp.ndarray:
  """Actions drawn from an actor-critic agent's policy (softmax of its logits)."""
  if spec.kind != "actor_critic":
    raise ValueError("sampling needs a policy: only actor-critic agents have one")
  return jax.random.categorical(key, spec.apply(params, obs)["logits"])


def _path_str(path: tuple) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def fit_params(spec: AgentSpec, params: Params, source: str) -> Params:
  """`params` as float32 numpy arrays if they fit `spec`'s network exactly, else a UserError.

  The error names the first mismatched parameter and both shapes, so a user can
  tell a wrong action count from a different architecture.
  """
  expected = dict(jax.tree_util.tree_flatten_with_path(jax.eval_shape(spec.init, jax.random.key(0)))[0])
  expected = {_path_str(k): v.shape for k, v in expected.items()}
  got = {_path_str(k): np.shape(v) for k, v in jax.tree_util.tree_flatten_with_path(params)[0]}
  for name, shape in expected.items():
    if name not in got:
      raise UserError(
        f"{source} does not fit the {spec.kind} network: parameter {name} {tuple(shape)} is missing from the checkpoint"
      )
    if tuple(got[name]) != tuple(shape):
      raise UserError(
        f"{source} does not fit the {spec.kind} network with {spec.num_actions} "
        f"actions: parameter {name} has shape {tuple(got[name])} in the checkpoint, "
        f"the network expects {tuple(shape)}"
      )
  extra = sorted(set(got) - set(expected))
  if extra:
    raise UserError(
      f"{source} does not fit the {spec.kind} network: the checkpoint has a "
      f"parameter {extra[0]} that the network does not"
    )
  return jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), params)


def fingerprint(params: Params) -> str:
  """A short hash of the params' values and names: the identity of an agent across files."""
  h = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(jax.device_get(params))[0]:
    h.update(_path_str(path).encode() + np.ascontiguousarray(leaf, np.float32).tobytes())
  return h.hexdigest()[:16]
