"""Playing an agent in its game: the states it visits, the actions it takes, its scores."""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import numpy as np
from tqdm.auto import tqdm

from jaxprobe.agents.agent import Agent, act
from jaxprobe.envs import make_atari
from jaxprobe.errors import UserError


class RecordedStates(NamedTuple):
  obs: np.ndarray        # (K, 4, 84, 84) uint8, what the agent saw
  actions: np.ndarray    # (K,) the action it took there
  steps: np.ndarray      # (K,) agent steps since the start of play
  episode_returns: list  # raw game scores of the episodes finished meanwhile


def make_env_for(agent: Agent, env_id: str | None = None, num_envs: int = 1, seed: int = 0, **kwargs):
  """An env of the agent's game (or `env_id`), checking the action counts agree."""
  env_id = env_id or agent.spec.env_id
  env = make_atari(env_id, num_envs=num_envs, seed=seed, **kwargs)
  if env.action_space.n != agent.spec.num_actions:
    raise UserError(f"the agent has {agent.spec.num_actions} actions but {env_id} has "
                    f"{env.action_space.n}: use an agent trained on {env_id}")
  return env


def record_states(agent: Agent, num_states: int, env_id: str | None = None, warmup: int = 100,
                  every: int = 4, epsilon: float = 0.0, seed: int = 0, progress: bool = True) -> RecordedStates:
  """Plays `warmup` steps, then keeps every `every`-th state until `num_states` are kept."""
  env = make_env_for(agent, env_id, seed=seed)
  policy = jax.jit(functools.partial(act, agent.spec))
  key = jax.random.key(seed)
  obs, _ = env.reset()
  kept_obs, kept_actions, kept_steps, returns, running = [], [], [], [], 0.0
  total = warmup + every * num_states
  for step in tqdm(range(total), desc="playing", disable=not progress, leave=False):
    key, act_key = jax.random.split(key)
    action = np.asarray(policy(agent.params, obs, act_key, epsilon))
    if step >= warmup and (step - warmup) % every == 0:
      kept_obs.append(obs[0].copy())
      kept_actions.append(int(action[0]))
      kept_steps.append(step)
    obs, _, terminated, truncated, info = env.step(action)
    running += float(info["reward"][0])
    if terminated[0] or truncated[0]:
      returns.append(running)
      running = 0.0
  env.close()
  return RecordedStates(np.stack(kept_obs), np.asarray(kept_actions), np.asarray(kept_steps), returns)
