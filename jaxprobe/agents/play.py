"""Playing an agent in its real game: whole games and their scores, and the states it visits.

Evaluation plays the real game (no episodic life, no reward clipping) and scores whole
games by their raw score (docs/agents.md, section 'Evaluation'). `policy_fn` is the one
place that turns a policy name ("auto", "greedy", "sample") into actions.
"""

from __future__ import annotations

import functools
from collections import deque
from typing import Callable, NamedTuple

import jax
import numpy as np
from tqdm.auto import tqdm

from jaxprobe.agents.agent import Agent, AgentSpec, act, sample_actions
from jaxprobe.envs import FRAME_SIZE, FRAME_STACK, make_atari
from jaxprobe.errors import UserError

POLICIES = ("auto", "greedy", "sample")


class Evaluation(NamedTuple):
  """Scores of whole games; `frames` holds game 0's frames when they were asked for."""

  scores: np.ndarray  # (episodes,) raw game score of each whole game
  lengths: np.ndarray  # (episodes,) agent steps
  frames: tuple = ()  # game 0's frames: (84, 84) gray, or (84, 84, 3) colour

  def summary(self) -> dict:
    """Number of games, mean, std, min and max score, and mean length."""
    s = self.scores
    return dict(
      episodes=int(len(s)),
      mean=float(s.mean()),
      std=float(s.std()),
      min=float(s.min()),
      max=float(s.max()),
      mean_length=float(self.lengths.mean()),
    )


class RecordedStates(NamedTuple):
  """States an agent visited while playing, with the action it took in each."""

  obs: np.ndarray  # (K, 4, 84, 84) uint8, what the agent saw
  actions: np.ndarray  # (K,) the action it took there
  steps: np.ndarray  # (K,) agent steps since the start of play
  episode_returns: list  # raw game scores of the episodes finished meanwhile


def make_env_for(agent: Agent, env_id: str | None = None, num_envs: int = 1, seed: int = 0, **kwargs):
  """An env of the agent's game (or `env_id`), checking the action counts agree."""
  env_id = env_id or agent.spec.env_id
  env = make_atari(env_id, num_envs=num_envs, seed=seed, **kwargs)
  if env.action_space.n != agent.spec.num_actions:
    raise UserError(
      f"the agent has {agent.spec.num_actions} actions but {env_id} has "
      f"{env.action_space.n}: use an agent trained on {env_id}"
    )
  return env


def policy_name(spec: AgentSpec, policy: str) -> str:
  """ "auto" resolved: "sample" for actor-critic agents (as they were trained), else "greedy"."""
  if policy not in POLICIES:
    raise UserError(f"--policy must be auto, greedy or sample, got '{policy}'")
  if policy == "auto":
    return "sample" if spec.kind == "actor_critic" else "greedy"
  return policy


def policy_fn(agent: Agent, policy: str, epsilon: float) -> Callable:
  """A jitted `(params, obs, key) -> actions` for "greedy" (epsilon-greedy), "sample" or "auto"."""
  policy = policy_name(agent.spec, policy)
  if policy == "sample":
    if agent.spec.kind != "actor_critic":
      raise UserError("--policy sample needs an actor-critic agent; this one has Q-values (use greedy)")
    return jax.jit(functools.partial(sample_actions, agent.spec))
  return jax.jit(lambda params, obs, key: act(agent.spec, params, obs, key, epsilon))


def play_games(
  agent: Agent,
  episodes: int,
  policy: Callable,
  env_id: str | None = None,
  seed: int = 0,
  num_envs: int = 8,
  colour: bool = False,
  view: Callable[[np.ndarray], np.ndarray] = lambda obs: obs,
  on_step: Callable | None = None,
  progress: bool = True,
  desc: str = "playing",
) -> Evaluation:
  """Plays `episodes` whole games, `num_envs` at a time, with `policy(params, view(obs), key)`.

  Each env plays exactly one game per round, so no game is cut short and the scores are
  not biased towards short games. After every step, `on_step(games, obs, info, running)`
  sees the global game index of each env, the observations the agent acted on, the env's
  info (reward, lives, ram) and which envs were still in their game.
  """
  if episodes <= 0:
    raise UserError(f"--episodes must be positive, got {episodes}")
  key = jax.random.key(seed)
  scores, lengths = [], []
  bar = tqdm(total=episodes, desc=desc, unit="game", disable=not progress, leave=False)
  round_index = 0
  while len(scores) < episodes:
    n = min(num_envs, episodes - len(scores))
    env = make_env_for(agent, env_id, num_envs=n, seed=seed + 1000 * round_index, colour=colour)
    obs, _ = env.reset()
    games = len(scores) + np.arange(n)
    total, length = np.zeros(n), np.zeros(n, np.int64)
    running = np.ones(n, bool)
    while running.any():
      key, act_key = jax.random.split(key)
      acted_on = obs
      obs, _, terminated, truncated, info = env.step(np.asarray(policy(agent.params, view(obs), act_key)))
      total += running * info["reward"]
      length += running
      if on_step is not None:
        on_step(games, acted_on, info, running)
      finished = running & (terminated | truncated)
      running &= ~finished
      if finished.any():  # update(0) would redraw the bar every env step
        bar.update(int(finished.sum()))
    env.close()
    scores.extend(total.tolist())
    lengths.extend(length.tolist())
    round_index += 1
  bar.close()
  return Evaluation(np.asarray(scores), np.asarray(lengths))


def colour_stacks_channel_last(obs: np.ndarray) -> np.ndarray:
  """envpool's colour observations `(N, 12, 84, 84)` as the generator's `(N, 84, 84, 12)`."""
  return obs.reshape(obs.shape[0], 3 * FRAME_STACK, FRAME_SIZE, FRAME_SIZE).transpose(0, 2, 3, 1)


def evaluate(
  agent: Agent,
  episodes: int,
  env_id: str | None = None,
  epsilon: float = 0.01,
  seed: int = 0,
  num_envs: int = 8,
  keep_frames: int = 0,
  progress: bool = True,
  observe: Callable[[np.ndarray], np.ndarray] | None = None,
  policy: str = "auto",
) -> Evaluation:
  """The agent's score over `episodes` whole games, acting epsilon-greedily or sampling.

  With `keep_frames`, up to that many of game 0's frames are returned (for a GIF).
  With `observe`, the games run in colour and the agent acts on
  `observe(colour_stacks (N, 84, 84, 12) uint8)` instead of its own view (generator goggles).
  `policy`: "greedy" (epsilon-greedy on the action head), "sample" (from an actor-critic
  agent's policy, as it was trained), or "auto" (`policy_name`).
  """
  view = (lambda obs: obs) if observe is None else (lambda obs: observe(colour_stacks_channel_last(obs)))
  frames = []

  def keep_frame(games, obs, info, running):
    if keep_frames and games[0] == 0 and running[0] and len(frames) < keep_frames:
      frames.append(obs[0, -1] if observe is None else obs[0, -3:].transpose(1, 2, 0))

  result = play_games(
    agent,
    episodes,
    policy_fn(agent, policy, epsilon),
    env_id,
    seed,
    num_envs,
    colour=observe is not None,
    view=view,
    on_step=keep_frame,
    progress=progress,
    desc="evaluating",
  )
  return result._replace(frames=tuple(frames))


def record_states(
  agent: Agent,
  num_states: int,
  env_id: str | None = None,
  warmup: int = 100,
  every: int = 4,
  epsilon: float = 0.0,
  seed: int = 0,
  progress: bool = True,
) -> RecordedStates:
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


class EpisodeTracker:
  """Raw game scores of whole games across a vector env (life losses are not game ends)."""

  def __init__(self, num_envs: int, window: int = 20):
    self.running = np.zeros(num_envs)
    self.finished: deque[float] = deque(maxlen=window)
    self.count = 0

  def update(self, info: dict, terminated: np.ndarray, truncated: np.ndarray) -> None:
    """Adds one env step's rewards; a game ends at a termination with no lives left, or a truncation."""
    self.running += info["reward"]
    game_over = (terminated & (info["lives"] == 0)) | truncated
    for i in np.flatnonzero(game_over):
      self.finished.append(float(self.running[i]))
      self.running[i] = 0.0
      self.count += 1

  def mean(self) -> float:
    """Mean score of the last `window` finished games (NaN before the first)."""
    return float(np.mean(self.finished)) if self.finished else float("nan")
