"""What the agent trainers share beyond run directories: scores of whole games, checkpoints."""
from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from jaxprobe.agents.agent import Agent, AgentSpec
from jaxprobe.agents.checkpoint import save_agent
from jaxprobe.config import to_dict
from jaxprobe.runs import RunDir, metadata_json, plot_curve


def checkpoint_run(run: RunDir, step: int, state: Any, wall: float, spec: AgentSpec, params: Any,
                   algorithm: str, config: Any) -> None:
  """Saves the train state, redraws the learning curve, and exports the agent for other commands."""
  run.save(step, state, dict(step=step, wall_time=wall))
  plot_curve(run.curve_file, run.path / "curve.png", ["episode_return"], f"{algorithm} {config.env_id}",
             "mean score of the last 20 games", "agent steps (4 frames each)")
  save_agent(run.path / "agent", Agent(spec, params, metadata_json(dict(
      algorithm=algorithm, steps=step, wall_time_s=round(wall, 1), seed=config.seed, config=to_dict(config)))))


class EpisodeTracker:
  """Raw game scores of whole games across a vector env (life losses are not game ends)."""

  def __init__(self, num_envs: int, window: int = 20):
    self.running = np.zeros(num_envs)
    self.finished: deque[float] = deque(maxlen=window)
    self.count = 0

  def update(self, info: dict, terminated: np.ndarray, truncated: np.ndarray) -> None:
    self.running += info["reward"]
    game_over = (terminated & (info["lives"] == 0)) | truncated
    for i in np.flatnonzero(game_over):
      self.finished.append(float(self.running[i]))
      self.running[i] = 0.0
      self.count += 1

  def mean(self) -> float:
    return float(np.mean(self.finished)) if self.finished else float("nan")
