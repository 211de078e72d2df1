"""Double DQN for Atari on envpool (van Hasselt et al. 2016), the paper's agent.

Read top to bottom: config, the pure loss and update, then `updates`: envs step
while the jitted update runs (envpool's send/recv), a frame-once uint8 replay
buffer, a linear epsilon schedule and a periodically copied target network.
`jaxprobe train-agent` runs it through a run directory. The formulas and
defaults: docs/agents.md, section 'Double DQN'.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxprobe.agents.agent import AgentSpec, act
from jaxprobe.agents.play import EpisodeTracker
from jaxprobe.agents.replay import FrameReplay, Transitions
from jaxprobe.config import COUNT, DISCOUNT, POSITIVE, POSITIVE_INT, PROBABILITY, SEED, Config, setting
from jaxprobe.conv import conv_module
from jaxprobe.envs import make_atari
from jaxprobe.errors import UserError


@dataclasses.dataclass(frozen=True)
class DQNConfig(Config):
  """Double DQN's settings (docs/agents.md, section 'Double DQN')."""

  env_id: str = "Pong-v5"
  seed: int = setting(1, SEED)
  total_steps: int = setting(2_000_000, POSITIVE_INT)  # agent steps over all envs (4 frames each)
  num_envs: int = setting(4, POSITIVE_INT)
  buffer_size: int = setting(100_000, POSITIVE_INT)  # transitions; frames stored once (7 KB each)
  batch_size: int = setting(32, POSITIVE_INT)
  lr: float = setting(1e-4, POSITIVE)
  adam_eps: float = setting(1.5e-4, POSITIVE)
  gamma: float = setting(0.99, DISCOUNT)
  n_step: int = setting(1, POSITIVE_INT)  # 1 is the paper's Double DQN; 3 learns faster per step
  learning_starts: int = setting(20_000, COUNT)
  train_every: int = setting(4, POSITIVE_INT)  # agent steps per gradient update
  target_update_every: int = setting(2_000, POSITIVE_INT)  # agent steps between target-network copies
  epsilon_start: float = setting(1.0, PROBABILITY)
  epsilon_end: float = setting(0.01, PROBABILITY)
  epsilon_decay_steps: int = setting(250_000, POSITIVE_INT)
  episodic_life: bool = True
  reward_clip: bool = True
  conv_impl: Literal["auto", "fast", "hybrid", "xla"] = "auto"
  stop_after: int = setting(0, COUNT)  # stop (and save) at this step without changing schedules (0: total_steps)
  checkpoint_every: int = setting(50_000, POSITIVE_INT)
  log_every: int = setting(10_000, POSITIVE_INT)

  def check(self) -> None:
    """A batch drawn from the replay buffer fits in it."""
    if self.batch_size > self.buffer_size:
      raise UserError(f"config field 'batch_size' ({self.batch_size}) must be at most buffer_size ({self.buffer_size})")


class TrainState(NamedTuple):
  """Everything a resumed run needs: online and target params, Adam state, PRNG key, agent steps."""

  params: Any
  target_params: Any
  opt_state: Any
  key: jax.Array
  step: jax.Array  # agent steps taken


def epsilon_at(config: DQNConfig, step):
  """Epsilon at agent step `step`: linear from epsilon_start to epsilon_end over epsilon_decay_steps."""
  frac = jnp.clip(step / config.epsilon_decay_steps, 0.0, 1.0)
  return config.epsilon_start + frac * (config.epsilon_end - config.epsilon_start)


def double_dqn_loss(params, target_params, spec: AgentSpec, batch: Transitions):
  """Huber loss of Q(s, a) against R + gamma^n Q_target(s', argmax_a' Q(s', a'))."""
  q = spec.apply(params, batch.obs)["q"]
  q_taken = jnp.take_along_axis(q, batch.actions[:, None], -1)[:, 0]
  next_action = jnp.argmax(spec.apply(jax.lax.stop_gradient(params), batch.next_obs)["q"], -1)
  next_q = jnp.take_along_axis(spec.apply(target_params, batch.next_obs)["q"], next_action[:, None], -1)[:, 0]
  target = jax.lax.stop_gradient(batch.returns + batch.discounts * next_q)
  loss = optax.huber_loss(q_taken, target).mean()
  return loss, dict(loss=loss, q_mean=q_taken.mean())


def end_step(config: DQNConfig) -> int:
  """The agent step the run stops at: total_steps, or stop_after if it comes first."""
  return config.total_steps if config.stop_after <= 0 else min(config.total_steps, config.stop_after)


def make_optimizer(config: DQNConfig) -> optax.GradientTransformation:
  """Adam with DQN's learning rate and epsilon."""
  return optax.adam(config.lr, eps=config.adam_eps)


def make_update(spec: AgentSpec, optimizer: optax.GradientTransformation):
  """A jitted `update(state, batch) -> (state, metrics)`: one Adam step on the Double DQN loss."""

  @jax.jit
  def update(state: TrainState, batch: Transitions):
    grads, metrics = jax.grad(double_dqn_loss, has_aux=True)(state.params, state.target_params, spec, batch)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    return state._replace(params=optax.apply_updates(state.params, updates), opt_state=opt_state), metrics

  return update


def init_state(spec: AgentSpec, config: DQNConfig, optimizer) -> TrainState:
  """Fresh params (the target network a copy), Adam state and key from `config.seed`, at step 0."""
  key, init_key = jax.random.split(jax.random.key(config.seed))
  params = spec.init(init_key)
  return TrainState(params, params, optimizer.init(params), key, jnp.zeros((), jnp.int32))


def agent_spec(config: DQNConfig, num_actions: int) -> AgentSpec:
  """The Q agent `config` trains, for a game of `num_actions` actions."""
  return AgentSpec("q", num_actions, config.env_id, conv=conv_module(config.conv_impl))


def updates(config: DQNConfig, spec: AgentSpec, state: TrainState) -> Iterator[tuple[TrainState, int, dict]]:
  """Double DQN from `state` until `config.total_steps` (or `stop_after`): yields (state, agent steps, metrics).

  Each item is one step of every env, with the updates its steps are due. The replay
  buffer is not saved (it is GBs at paper scale): a resumed run refills it for
  `learning_starts` steps, acting with the restored epsilon, on fresh games seeded by the step.
  """
  optimizer = make_optimizer(config)
  update = make_update(spec, optimizer)
  policy = jax.jit(lambda params, obs, key, step: act(spec, params, obs, key, epsilon_at(config, step)))
  step = int(state.step)
  envs = make_atari(
    config.env_id,
    config.num_envs,
    seed=config.seed + step,
    episodic_life=config.episodic_life,
    reward_clip=config.reward_clip,
  )
  refill_until = step + config.learning_starts
  replay = FrameReplay(config.buffer_size, config.num_envs)
  rng = np.random.default_rng(config.seed + step)
  tracker = EpisodeTracker(config.num_envs)
  N = config.num_envs
  next_target = step + config.target_update_every
  metrics = dict(loss=np.nan, q_mean=np.nan)  # every curve row has the same columns, before learning too
  obs, _ = envs.reset()
  valid = np.ones(N, bool)
  key = state.key
  end = end_step(config)
  try:
    while step < end:
      key, act_key = jax.random.split(key)
      actions = np.asarray(policy(state.params, obs, act_key, step))
      envs.send(actions)  # the emulators step while the update below runs
      step += N
      if step >= refill_until and replay.can_sample(config.n_step):
        # One update per `train_every` agent steps: as many as boundaries this iteration crossed.
        for _ in range(step // config.train_every - (step - N) // config.train_every):
          state, metrics = update(state, replay.sample(rng, config.batch_size, config.n_step, config.gamma))
      if step >= next_target:
        state = state._replace(target_params=state.params)
        next_target += config.target_update_every
      next_obs, reward, terminated, truncated, info = envs.recv()
      done = terminated | truncated
      replay.add(obs, actions, reward, done, valid)
      tracker.update(info, terminated, truncated)
      obs, valid = next_obs, ~done
      state = state._replace(key=key, step=jnp.asarray(step, jnp.int32))
      yield (
        state,
        step,
        dict(
          episode_return=tracker.mean(),
          episodes=tracker.count,
          epsilon=round(float(epsilon_at(config, step)), 4),
          **metrics,
        ),
      )
  finally:
    envs.close()
