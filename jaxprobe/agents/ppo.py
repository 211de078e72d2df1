"""PPO for Atari on envpool (Schulman et al. 2017), the actor-critic family of the paper's agents.

Read top to bottom: config, pure pieces (GAE, loss, one minibatch step, one
update), then `updates`, which drives rollouts and updates from Python and yields
after each update; `jaxprobe train-agent` runs it through a run directory. The
formulas and defaults: docs/agents.md, section 'PPO'.

How the epochs x minibatches of an update are driven is `config.loop`:
"scan" fuses them into one jitted `lax.scan` (right for accelerators);
"python" calls one jitted minibatch step from a Python loop, which on XLA:CPU
ran 36x faster (`benchmarks/loops.py`) because convolution gradients inside loops are slow there
(docs/cpu.md, section 'Convolution gradients inside loops'). "auto" picks per
backend. Both compute the same thing.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Iterator, Literal, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxprobe.agents.agent import AgentSpec
from jaxprobe.agents.play import EpisodeTracker
from jaxprobe.config import COUNT, DISCOUNT, NONNEGATIVE, POSITIVE, POSITIVE_INT, PROBABILITY, SEED, Config, setting
from jaxprobe.conv import conv_module
from jaxprobe.envs import make_atari
from jaxprobe.errors import UserError
from jaxprobe.parallel import resolve_loop


@dataclasses.dataclass(frozen=True)
class PPOConfig(Config):
  """PPO's settings, CleanRL's Atari values by default (docs/agents.md, section 'PPO')."""

  env_id: str = "Pong-v5"
  seed: int = setting(1, SEED)
  total_steps: int = setting(10_000_000, POSITIVE_INT)  # agent steps over all envs (4 frames each)
  num_envs: int = setting(8, POSITIVE_INT)
  num_steps: int = setting(128, POSITIVE_INT)  # rollout length per env
  lr: float = setting(2.5e-4, POSITIVE)
  anneal_lr: bool = True
  gamma: float = setting(0.99, DISCOUNT)
  gae_lambda: float = setting(0.95, PROBABILITY)
  num_minibatches: int = setting(4, POSITIVE_INT)
  update_epochs: int = setting(4, POSITIVE_INT)
  clip_coef: float = setting(0.1, POSITIVE)
  ent_coef: float = setting(0.01, NONNEGATIVE)
  vf_coef: float = setting(0.5, NONNEGATIVE)
  max_grad_norm: float = setting(0.5, POSITIVE)
  episodic_life: bool = True  # training aids; evaluation plays the real game
  reward_clip: bool = True
  loop: Literal["auto", "python", "scan"] = "auto"
  conv_impl: Literal["auto", "fast", "hybrid", "xla"] = "auto"
  stop_after: int = setting(0, COUNT)  # stop (and save) at this step without changing schedules (0: total_steps)
  checkpoint_every: int = setting(50_000, POSITIVE_INT)  # agent steps
  log_every: int = setting(10_000, POSITIVE_INT)

  def check(self) -> None:
    """The rollout batch splits into equal minibatches."""
    batch = self.num_envs * self.num_steps
    if batch % self.num_minibatches:
      raise UserError(
        f"config field 'num_minibatches' ({self.num_minibatches}) must divide the rollout batch num_envs x "
        f"num_steps = {self.num_envs} x {self.num_steps} = {batch}"
      )


class TrainState(NamedTuple):
  """Everything a resumed run needs: params, Adam state, PRNG key, agent steps and updates done."""

  params: Any
  opt_state: Any
  key: jax.Array
  step: jax.Array  # agent steps taken
  update: jax.Array  # updates done


class Batch(NamedTuple):
  """One rollout, flattened over time and envs, with its advantages and returns."""

  obs: jnp.ndarray  # (B, 4, 84, 84) uint8
  actions: jnp.ndarray  # (B,)
  logprobs: jnp.ndarray  # (B,) under the behaviour policy
  advantages: jnp.ndarray
  returns: jnp.ndarray


def gae(rewards, values, dones, last_value, last_done, gamma: float, lam: float):
  """Generalised advantage estimates for a `(T, N)` rollout.

  `dones[t]` marks that `obs[t]` starts a new episode (so `values[t]` must not be
  bootstrapped into step t-1), as envpool's auto-reset produces them.
  """
  chex.assert_equal_shape([rewards, values, dones])
  next_values = jnp.concatenate([values[1:], last_value[None]])
  next_nonterminal = 1.0 - jnp.concatenate([dones[1:], last_done[None]]).astype(jnp.float32)
  deltas = rewards + gamma * next_values * next_nonterminal - values

  def back(carry, x):
    delta, nonterminal = x
    adv = delta + gamma * lam * nonterminal * carry
    return adv, adv

  _, advantages = jax.lax.scan(back, jnp.zeros_like(last_value), (deltas, next_nonterminal), reverse=True)
  return advantages, advantages + values


def ppo_loss(params, spec: AgentSpec, config: PPOConfig, batch: Batch):
  """The clipped PPO objective (Schulman et al. 2017, eq. 7) plus vf_coef times the value loss minus
  ent_coef times the entropy, on one minibatch; advantages normalised per minibatch.
  Returns (total, metrics).
  """
  out = spec.apply(params, batch.obs)
  logp_all = jax.nn.log_softmax(out["logits"])
  logp = jnp.take_along_axis(logp_all, batch.actions[:, None], axis=-1)[:, 0]
  ratio = jnp.exp(logp - batch.logprobs)
  adv = (batch.advantages - batch.advantages.mean()) / (batch.advantages.std() + 1e-8)
  policy_loss = jnp.maximum(-adv * ratio, -adv * jnp.clip(ratio, 1 - config.clip_coef, 1 + config.clip_coef)).mean()
  value_loss = 0.5 * ((out["value"] - batch.returns) ** 2).mean()
  entropy = -(jnp.exp(logp_all) * logp_all).sum(-1).mean()
  total = policy_loss + config.vf_coef * value_loss - config.ent_coef * entropy
  return total, dict(
    policy_loss=policy_loss, value_loss=value_loss, entropy=entropy, approx_kl=((ratio - 1) - jnp.log(ratio)).mean()
  )


def num_updates(config: PPOConfig) -> int:
  """Updates in the whole run: total_steps in rollouts of num_envs x num_steps agent steps."""
  return max(1, config.total_steps // (config.num_envs * config.num_steps))


def end_step(config: PPOConfig) -> int:
  """The agent step the run stops at: the last whole update before total_steps, or the one reaching stop_after."""
  batch_size = config.num_envs * config.num_steps
  updates = num_updates(config)
  if config.stop_after > 0:
    updates = min(updates, -(-config.stop_after // batch_size))
  return updates * batch_size


def make_optimizer(config: PPOConfig, num_updates: int) -> optax.GradientTransformation:
  """Adam after global-norm clipping; the learning rate annealed linearly to 0 over the run if `anneal_lr`."""
  steps_per_update = config.update_epochs * config.num_minibatches
  lr = optax.linear_schedule(config.lr, 0.0, num_updates * steps_per_update) if config.anneal_lr else config.lr
  return optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adam(lr, eps=1e-5))


def make_update(spec: AgentSpec, config: PPOConfig, optimizer: optax.GradientTransformation):
  """`update(state, batch) -> (state, metrics)`: update_epochs x num_minibatches Adam steps."""

  def minibatch_step(params, opt_state, mb: Batch):
    grads, metrics = jax.grad(ppo_loss, has_aux=True)(params, spec, config, mb)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, metrics

  def permutations(key, n):
    keys = jax.random.split(key, config.update_epochs)
    perms = jax.vmap(lambda k: jax.random.permutation(k, n))(keys)
    return perms.reshape(config.update_epochs * config.num_minibatches, -1)

  if resolve_loop(config.loop) == "scan":

    @jax.jit
    def update(state: TrainState, batch: Batch):
      key, perm_key = jax.random.split(state.key)
      idx = permutations(perm_key, batch.obs.shape[0])

      def body(carry, i):
        params, opt_state = carry
        params, opt_state, metrics = minibatch_step(params, opt_state, jax.tree_util.tree_map(lambda x: x[i], batch))
        return (params, opt_state), metrics

      (params, opt_state), metrics = jax.lax.scan(body, (state.params, state.opt_state), idx)
      return state._replace(
        params=params, opt_state=opt_state, key=key, update=state.update + 1
      ), jax.tree_util.tree_map(jnp.mean, metrics)

    return update

  step_jit = jax.jit(minibatch_step)
  perm_jit = jax.jit(permutations, static_argnums=1)
  split = jax.jit(jax.random.split)
  take = jax.jit(lambda b, i: jax.tree_util.tree_map(lambda x: x[i], b))

  def update(state: TrainState, batch: Batch):
    key, perm_key = split(state.key)
    idx = perm_jit(perm_key, batch.obs.shape[0])
    params, opt_state, all_metrics = state.params, state.opt_state, []
    for i in range(idx.shape[0]):
      params, opt_state, metrics = step_jit(params, opt_state, take(batch, idx[i]))
      all_metrics.append(metrics)
    return state._replace(params=params, opt_state=opt_state, key=key, update=state.update + 1), jax.tree_util.tree_map(
      lambda *m: jnp.mean(jnp.stack(m)), *all_metrics
    )

  return update


def init_state(spec: AgentSpec, config: PPOConfig, optimizer) -> TrainState:
  """Fresh params, Adam state and key from `config.seed`, at step 0 and update 0."""
  key, init_key = jax.random.split(jax.random.key(config.seed))
  params = spec.init(init_key)
  return TrainState(params, optimizer.init(params), key, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))


def agent_spec(config: PPOConfig, num_actions: int) -> AgentSpec:
  """The actor-critic agent `config` trains, for a game of `num_actions` actions."""
  return AgentSpec("actor_critic", num_actions, config.env_id, conv=conv_module(config.conv_impl))


def updates(config: PPOConfig, spec: AgentSpec, state: TrainState) -> Iterator[tuple[TrainState, int, dict]]:
  """PPO from `state` until `config.total_steps` (or `stop_after`): yields (state, agent steps, metrics).

  Each item is one rollout of num_envs x num_steps agent steps and one update. Metrics: the
  mean raw score of the last 20 whole games, games finished, and the update's losses.
  """
  batch_size = config.num_envs * config.num_steps
  optimizer = make_optimizer(config, num_updates(config))
  update = make_update(spec, config, optimizer)
  # The emulators cannot be saved: a resumed run starts fresh games, seeded by the step.
  step = int(state.step)
  envs = make_atari(
    config.env_id,
    config.num_envs,
    seed=config.seed + step,
    episodic_life=config.episodic_life,
    reward_clip=config.reward_clip,
  )
  tracker = EpisodeTracker(config.num_envs)

  @jax.jit
  def policy(params, obs, key):
    out = spec.apply(params, obs)
    action = jax.random.categorical(key, out["logits"])
    logp = jnp.take_along_axis(jax.nn.log_softmax(out["logits"]), action[:, None], -1)[:, 0]
    return action, logp, out["value"]

  advantages_fn = jax.jit(functools.partial(gae, gamma=config.gamma, lam=config.gae_lambda))
  obs, _ = envs.reset()
  done = np.zeros(config.num_envs, bool)
  T, N = config.num_steps, config.num_envs
  buf_obs = np.zeros((T, N, *obs.shape[1:]), np.uint8)
  buf = {k: np.zeros((T, N), np.float32) for k in ("logprobs", "values", "rewards", "dones")}
  buf_actions = np.zeros((T, N), np.int32)
  last_update = end_step(config) // batch_size
  try:
    for _ in range(int(state.update), last_update):
      key = state.key
      for t in range(T):
        key, act_key = jax.random.split(key)
        action, logp, value = jax.device_get(policy(state.params, obs, act_key))
        buf_obs[t], buf_actions[t], buf["logprobs"][t], buf["values"][t], buf["dones"][t] = (
          obs,
          action,
          logp,
          value,
          done,
        )
        obs, reward, terminated, truncated, info = envs.step(action)
        done = terminated | truncated
        buf["rewards"][t] = reward
        tracker.update(info, terminated, truncated)
      _, _, last_value = policy(state.params, obs, key)
      state = state._replace(key=key)
      adv, ret = advantages_fn(buf["rewards"], buf["values"], buf["dones"], last_value, jnp.asarray(done))
      batch = Batch(
        buf_obs.reshape(-1, *obs.shape[1:]),
        buf_actions.reshape(-1),
        buf["logprobs"].reshape(-1),
        adv.reshape(-1),
        ret.reshape(-1),
      )
      state, metrics = update(state, batch)
      state = state._replace(step=state.step + batch_size)
      yield state, int(state.step), dict(episode_return=tracker.mean(), episodes=tracker.count, **metrics)
  finally:
    envs.close()
