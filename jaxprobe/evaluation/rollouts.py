"""Rollout evidence: how the agent's games really end, to check a hypothesis from the samples.

docs/evaluation.md, section 'Rollout evidence'.

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

import numpy as np

from jaxprobe.agents.agent import Agent
from jaxprobe.agents.play import play_games, policy_fn

RAM_FACTS = {"Seaquest-v5": dict(oxygen=102, oxygen_full=64, player_x=70, player_y=97)}
HISTORY = 64  # agent steps of RAM kept per env: longer than any death animation


def oxygen_at_death(oxygen_history) -> int:
  """The last non-zero oxygen reading before the trailing run of zeros (0 if there is none)."""
  values = list(oxygen_history)
  while values and values[-1] == 0:
    values.pop()
  return int(values[-1]) if values else 0


def rollout_evidence(
  agent: Agent,
  episodes: int,
  env_id: str | None = None,
  epsilon: float = 0.01,
  seed: int = 0,
  num_envs: int = 8,
  low_oxygen: int = 16,
  progress: bool = True,
  policy: str = "auto",
) -> dict:
  """Plays `episodes` whole games and summarises their life losses (with frames before each)."""
  env_id = env_id or agent.spec.env_id
  facts = RAM_FACTS.get(env_id)
  deaths, lives, steps, score_so_far, history = [], {}, {}, {}, {}

  def record_life_losses(games, obs, info, running):
    for i in np.flatnonzero(running):
      game = int(games[i])
      steps[game] = steps.get(game, 0) + 1
      score_so_far[game] = score_so_far.get(game, 0.0) + float(info["reward"][i])
      ram = history.setdefault(game, deque(maxlen=HISTORY))
      ram.append(info["ram"][i].copy())
      if info["lives"][i] < lives.get(game, info["lives"][i]):
        record = dict(
          game=game,
          step=steps[game],
          score=score_so_far[game],
          lives_left=int(info["lives"][i]),
          frame=obs[i, -1].copy(),
        )
        if facts is not None:
          at_death = ram[max(0, len(ram) - 20)]  # before the death animation
          record.update(
            oxygen=oxygen_at_death(r[facts["oxygen"]] for r in ram),
            player_x=int(at_death[facts["player_x"]]),
            player_y=int(at_death[facts["player_y"]]),
          )
        deaths.append(record)
      lives[game] = info["lives"][i]

  played = play_games(
    agent,
    episodes,
    policy_fn(agent, policy, epsilon),
    env_id,
    seed,
    num_envs,
    on_step=record_life_losses,
    progress=progress,
    desc="rollouts",
  )
  scores, lengths = played.scores.tolist(), played.lengths.tolist()
  summary = dict(
    env_id=env_id,
    games=len(scores),
    epsilon=epsilon,
    seed=seed,
    mean_score=float(np.mean(scores)),
    scores=scores,
    mean_length=float(np.mean(lengths)),
    life_losses=len(deaths),
    life_losses_per_game=len(deaths) / len(scores),
  )
  if facts is not None:
    low = [d for d in deaths if d["oxygen"] <= low_oxygen]
    summary.update(
      low_oxygen_threshold=f"<= {low_oxygen} of {facts['oxygen_full']}",
      deaths_with_low_oxygen=len(low),
      share_of_deaths_with_low_oxygen=len(low) / len(deaths) if deaths else None,
      oxygen_at_death=[d["oxygen"] for d in deaths],
    )
  return dict(summary=summary, deaths=deaths)
