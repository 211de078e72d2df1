"""What the agent trainers share beyond run directories: scores of whole games."""
from __future__ import annotations

from collections import deque

import numpy as np


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
