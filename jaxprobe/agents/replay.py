"""A uint8 replay buffer for frame-stacked Atari that stores each frame once, not four times.

Each env has a ring of slots; a slot holds the newest frame of the observation
the agent acted on, the action, reward, done flag, and two flags:
- `first`: all 4 frames of that observation are the same frame, as envpool gives
  them after a reset. Stacks are rebuilt by walking back from a slot to the
  previous ones, repeating the frame at a `first` slot, so they equal what the
  agent saw (tests check this against envpool's own stacks).
- `valid`: false for the step right after a `done`, whose action envpool ignores
  (it resets the game or, with episodic life, continues it); never sampled.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from jaxprobe.envs import FRAME_SIZE, FRAME_STACK


class Transitions(NamedTuple):
  """A batch of n-step transitions sampled from the replay buffer."""

  obs: np.ndarray  # (B, 4, 84, 84) uint8
  actions: np.ndarray  # (B,)
  returns: np.ndarray  # (B,) n-step discounted reward
  next_obs: np.ndarray  # (B, 4, 84, 84) the state n steps later
  discounts: np.ndarray  # (B,) gamma^n, or 0 where the episode ended within n steps


class FrameReplay:
  """The ring buffer of the module docstring: each frame stored once, stacks rebuilt on sampling."""

  def __init__(self, capacity: int, num_envs: int, frame_shape=(FRAME_SIZE, FRAME_SIZE), stack: int = FRAME_STACK):
    self.length = capacity // num_envs
    if self.length < 2 * stack:
      raise ValueError(f"replay capacity {capacity} is too small for {num_envs} envs")
    self.num_envs, self.stack = num_envs, stack
    shape = (num_envs, self.length)
    self.frames = np.zeros(shape + tuple(frame_shape), np.uint8)
    self.actions = np.zeros(shape, np.int32)
    self.rewards = np.zeros(shape, np.float32)
    self.dones = np.zeros(shape, bool)
    self.first = np.zeros(shape, bool)
    self.valid = np.zeros(shape, bool)
    self.pos = 0  # next slot to write (the same for every env: they step in lockstep)
    self.size = 0

  def add(self, obs: np.ndarray, actions, rewards, dones, valid) -> None:
    """One step of every env: the observations acted on `(N, 4, H, W)` and what followed."""
    p = self.pos
    self.frames[:, p] = obs[:, -1]
    self.first[:, p] = (obs == obs[:, -1:]).all(axis=(1, 2, 3))
    self.actions[:, p], self.rewards[:, p], self.dones[:, p], self.valid[:, p] = actions, rewards, dones, valid
    self.pos = (p + 1) % self.length
    self.size = min(self.size + 1, self.length)

  def stacks(self, envs: np.ndarray, slots: np.ndarray) -> np.ndarray:
    """The observations `(B, 4, H, W)` whose newest frames sit at `slots` of `envs`."""
    idx = np.empty((len(slots), self.stack), np.int64)
    cur = slots.copy()
    idx[:, -1] = cur
    for k in range(self.stack - 2, -1, -1):
      cur = np.where(self.first[envs, cur], cur, (cur - 1) % self.length)
      idx[:, k] = cur
    return self.frames[envs[:, None], idx]

  def can_sample(self, n_step: int) -> bool:
    """Whether enough steps are stored for a stack's history and an n-step future."""
    return self.size > self.stack + n_step + 1

  def sample(self, rng: np.random.Generator, batch_size: int, n_step: int, gamma: float) -> Transitions:
    """Uniform over valid transitions whose whole history and n-step future are in the buffer."""
    oldest = (self.pos - self.size) % self.length
    envs = np.empty(0, np.int64)
    slots = np.empty(0, np.int64)
    while len(slots) < batch_size:
      # Ages stack-1 .. size-1-n: the walk back and the n steps ahead stay inside the ring.
      e = rng.integers(0, self.num_envs, 2 * batch_size)
      age = rng.integers(self.stack - 1, self.size - n_step, 2 * batch_size)
      s = (oldest + age) % self.length
      ok = self.valid[e, s]
      envs, slots = np.concatenate([envs, e[ok]]), np.concatenate([slots, s[ok]])
    envs, slots = envs[:batch_size], slots[:batch_size]
    returns = np.zeros(batch_size, np.float32)
    alive = np.ones(batch_size, bool)
    for k in range(n_step):
      s = (slots + k) % self.length
      returns += alive * gamma**k * self.rewards[envs, s]
      alive &= ~self.dones[envs, s]
    next_slots = (slots + n_step) % self.length
    return Transitions(
      self.stacks(envs, slots),
      self.actions[envs, slots],
      returns,
      self.stacks(envs, next_slots),
      (alive * gamma**n_step).astype(np.float32),
    )
