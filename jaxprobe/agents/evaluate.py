"""Scores of an agent in the real game: whole games, raw score, no training aids."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable, NamedTuple

import jax
import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from jaxprobe.agents.agent import Agent, act, sample_actions
from jaxprobe.agents.rollout import make_env_for
from jaxprobe.errors import UserError


class Evaluation(NamedTuple):
  scores: np.ndarray   # (episodes,) raw game score of each whole game
  lengths: np.ndarray  # (episodes,) agent steps

  def summary(self) -> dict:
    s = self.scores
    return dict(episodes=int(len(s)), mean=float(s.mean()), std=float(s.std()), min=float(s.min()),
                max=float(s.max()), mean_length=float(self.lengths.mean()))


def play_games(agent: Agent, episodes: int, policy: Callable, env_id: str | None = None, seed: int = 0,
               num_envs: int = 8, colour: bool = False, view: Callable[[np.ndarray], np.ndarray] = lambda obs: obs,
               on_step: Callable | None = None, progress: bool = True, desc: str = "playing") -> Evaluation:
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


def evaluate(agent: Agent, episodes: int, env_id: str | None = None, epsilon: float = 0.01,
             seed: int = 0, num_envs: int = 8, gif: str | Path | None = None,
             gif_max_steps: int = 2000, progress: bool = True,
             observe: Callable[[np.ndarray], np.ndarray] | None = None, policy: str = "auto") -> Evaluation:
  """The agent's score over `episodes` whole games, acting epsilon-greedily or sampling.

  With `gif`, game 0 is written as an animated GIF (up to `gif_max_steps` agent steps).
  With `observe`, the games run in colour and the agent acts on
  `observe(colour_stacks (N, 84, 84, 12) uint8)` instead of its own view (generator goggles).
  `policy`: "greedy" (epsilon-greedy on the action head), "sample" (from an actor-critic
  agent's policy, as it was trained), or "auto" (sample for actor-critic agents, else greedy).
  """
  view = (lambda obs: obs) if observe is None else (
      lambda obs: observe(obs.reshape(obs.shape[0], 12, 84, 84).transpose(0, 2, 3, 1)))
  frames = []

  def keep_frame(games, obs, info, running):
    if gif and games[0] == 0 and running[0] and len(frames) < gif_max_steps:
      frames.append(obs[0, -1] if observe is None else obs[0, -3:].transpose(1, 2, 0))

  result = play_games(agent, episodes, resolve_policy(agent, policy, epsilon), env_id, seed, num_envs,
                      colour=observe is not None, view=view, on_step=keep_frame, progress=progress,
                      desc="evaluating")
  if gif:
    write_gif(gif, frames)
  return result


def resolve_policy(agent: Agent, policy: str, epsilon: float):
  """A jitted `(params, obs, key) -> actions` for "greedy", "sample" or "auto"."""
  if policy == "auto":
    policy = "sample" if agent.spec.kind == "actor_critic" else "greedy"
  if policy == "sample":
    if agent.spec.kind != "actor_critic":
      raise UserError("--policy sample needs an actor-critic agent; this one has Q-values (use greedy)")
    return jax.jit(functools.partial(sample_actions, agent.spec))
  if policy != "greedy":
    raise UserError(f"--policy must be auto, greedy or sample, got '{policy}'")
  return jax.jit(lambda params, obs, key: act(agent.spec, params, obs, key, epsilon))


def write_gif(path: str | Path, frames: list[np.ndarray], scale: int = 2, every: int = 2) -> None:
  up = lambda f: np.kron(f, np.ones((scale, scale) + (1,) * (f.ndim - 2), np.uint8))
  images = [Image.fromarray(up(f)) for f in frames[::every]]
  if images:
    # 4 frames per agent step at 60 Hz, every 2nd step kept: about 133 ms per image.
    images[0].save(path, save_all=True, append_images=images[1:], duration=133, loop=0)
