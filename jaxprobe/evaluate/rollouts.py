"""Rollout evidence: how the agent's games really end, to check a hypothesis from the samples.

Plays whole games and records every life loss: when, the score so far, the frame
just before it, and for games with known RAM annotations (Seaquest, from AtariARI,
Anand et al. 2019) what the RAM said then.

Seaquest: RAM[102] is the oxygen meter (64 full). On a collision the game zeroes it
for the ~15-step death animation before the life counter drops; suffocation runs it
down to zero gradually. The oxygen at death is therefore the last non-zero reading
before that run of zeros: low for a suffocation, the level of the moment for a collision.
"""
from __future__ import annotations

from collections import deque

import jax
import numpy as np
from tqdm.auto import tqdm

from jaxprobe.agents.agent import Agent
from jaxprobe.agents.evaluate import resolve_policy
from jaxprobe.agents.rollout import make_env_for
from jaxprobe.errors import UserError

RAM_FACTS = {"Seaquest-v5": dict(oxygen=102, oxygen_full=64, player_x=70, player_y=97)}
HISTORY = 64  # agent steps of RAM kept per env: longer than any death animation


def oxygen_at_death(oxygen_history) -> int:
  """The last non-zero oxygen reading before the trailing run of zeros (0 if there is none)."""
  values = list(oxygen_history)
  while values and values[-1] == 0:
    values.pop()
  return int(values[-1]) if values else 0


def rollout_evidence(agent: Agent, episodes: int, env_id: str | None = None, epsilon: float = 0.01,
                     seed: int = 0, num_envs: int = 8, low_oxygen: int = 16, progress: bool = True,
                     policy: str = "auto") -> dict:
  """Plays `episodes` whole games and summarises their life losses (with frames before each)."""
  if episodes <= 0:
    raise UserError(f"--rollouts must be positive, got {episodes}")
  env_id = env_id or agent.spec.env_id
  facts = RAM_FACTS.get(env_id)
  policy = resolve_policy(agent, policy, epsilon)
  key = jax.random.key(seed)
  deaths, scores, lengths = [], [], []
  bar = tqdm(total=episodes, desc="rollouts", unit="game", disable=not progress, leave=False)
  round_index = 0
  while len(scores) < episodes:
    n = min(num_envs, episodes - len(scores))
    env = make_env_for(agent, env_id, num_envs=n, seed=seed + 1000 * round_index)
    obs, info = env.reset()
    lives = info["lives"].copy()
    score, length = np.zeros(n), np.zeros(n, np.int64)
    running = np.ones(n, bool)
    history = [deque(maxlen=HISTORY) for _ in range(n)]
    while running.any():
      key, k = jax.random.split(key)
      before = obs[:, -1].copy()
      obs, _, terminated, truncated, info = env.step(np.asarray(policy(agent.params, obs, k)))
      score += running * info["reward"]
      length += running
      for i in np.flatnonzero(running):
        history[i].append(info["ram"][i].copy())
        if info["lives"][i] < lives[i]:
          record = dict(game=len(scores) + int(i), step=int(length[i]), score=float(score[i]),
                        lives_left=int(info["lives"][i]), frame=before[i])
          if facts is not None:
            ram = history[i]
            at_death = ram[max(0, len(ram) - 20)]  # before the death animation
            record.update(oxygen=oxygen_at_death(r[facts["oxygen"]] for r in ram),
                          player_x=int(at_death[facts["player_x"]]), player_y=int(at_death[facts["player_y"]]))
          deaths.append(record)
      lives = info["lives"].copy()
      finished = running & (terminated | truncated)
      running &= ~finished
      bar.update(int(finished.sum()))
    env.close()
    scores.extend(score.tolist())
    lengths.extend(length.tolist())
    round_index += 1
  bar.close()
  summary = dict(env_id=env_id, games=len(scores), epsilon=epsilon, seed=seed, mean_score=float(np.mean(scores)),
                 scores=scores, mean_length=float(np.mean(lengths)), life_losses=len(deaths),
                 life_losses_per_game=len(deaths) / len(scores))
  if facts is not None:
    low = [d for d in deaths if d["oxygen"] <= low_oxygen]
    summary.update(low_oxygen_threshold=f"<= {low_oxygen} of {facts['oxygen_full']}",
                   deaths_with_low_oxygen=len(low),
                   share_of_deaths_with_low_oxygen=len(low) / len(deaths) if deaths else None,
                   oxygen_at_death=[d["oxygen"] for d in deaths])
  return dict(summary=summary, deaths=deaths)
