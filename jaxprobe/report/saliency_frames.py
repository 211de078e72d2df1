"""`jaxprobe saliency`: play an agent, explain what it looks at, write images a person can scan."""
from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np

from jaxprobe import saliency
from jaxprobe.agents.agent import Agent, greedy_actions
from jaxprobe.agents.rollout import record_states
from jaxprobe.errors import UserError
from jaxprobe.report.images import grid, heatmap_overlay, save_png


def prepare_out_dir(out: str | Path) -> Path:
  out = Path(out)
  if out.exists() and not out.is_dir():
    raise UserError(f"output directory {out} is a file; choose a directory path")
  try:
    out.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise UserError(f"cannot create output directory {out}: {e.strerror}") from None
  return out


def explain_play(agent: Agent, out: str | Path, method: str = "guided", frames: int = 16,
                 env_id: str | None = None, head: str | None = None, warmup: int = 100,
                 every: int = 4, epsilon: float = 0.0, seed: int = 0, progress: bool = True) -> dict:
  """Plays `agent`, computes `method` saliency on `frames` states, writes PNGs, a grid and a JSON.

  Returns the JSON summary. Each frame image shows the newest frame of the
  stack with the saliency mask (|map| summed over the stack, box-blurred,
  normalised) as heat over it.
  """
  if method not in saliency.METHODS:
    raise UserError(f"unknown saliency method '{method}'; known: {', '.join(saliency.METHODS)}")
  if frames <= 0:
    raise UserError(f"--frames must be positive, got {frames}")
  if head is not None and head not in agent.spec.heads:
    raise UserError(f"this {agent.spec.kind} agent has outputs {', '.join(agent.spec.heads)}, not '{head}'")
  out = prepare_out_dir(out)
  states = record_states(agent, frames, env_id, warmup=warmup, every=every, epsilon=epsilon,
                         seed=seed, progress=progress)

  spec = agent.spec
  @jax.jit
  def explain(params, obs, key):
    outputs = spec.apply(params, obs)
    sal = saliency.compute(method, spec, params, obs, key=key, head=head)
    return outputs, sal, saliency.saliency_mask(sal)

  batch = 16  # bounds memory of the multi-pass methods; one compile for every batch
  results = []
  for start in range(0, frames, batch):
    obs = states.obs[start:start + batch]
    padded = np.concatenate([obs, np.repeat(obs[-1:], batch - len(obs), 0)]) if len(obs) < batch else obs
    outputs, _, mask = jax.device_get(explain(agent.params, padded, jax.random.key(seed + start)))
    results.append((jax.tree_util.tree_map(lambda x: x[:len(obs)], outputs), mask[:len(obs)]))
  outputs = {k: np.concatenate([r[0][k] for r in results]) for k in results[0][0]}
  masks = np.concatenate([r[1] for r in results])
  greedy = np.asarray(greedy_actions(spec, outputs))

  images, captions, records = [], [], []
  for i in range(frames):
    img = heatmap_overlay(states.obs[i, -1], masks[i])
    save_png(out / f"frame_{i:03d}.png", img)
    images.append(img)
    head_out = outputs[spec.action_head][i]
    captions.append(f"step {states.steps[i]}  action {states.actions[i]}  "
                    f"{spec.action_head} {head_out.max():.2f}")
    records.append(dict(frame=f"frame_{i:03d}.png", step=int(states.steps[i]),
                        action_taken=int(states.actions[i]), greedy_action=int(greedy[i]),
                        outputs={k: np.asarray(v[i]).round(6).tolist() for k, v in outputs.items()}))
  save_png(out / "grid.png", grid(images, captions, cols=4))
  summary = dict(method=method, env_id=env_id or spec.env_id, agent=spec.to_json(),
                 agent_metadata=agent.metadata, explained_output=head or spec.action_head,
                 explained_action="greedy", epsilon=epsilon, seed=seed, warmup=warmup, every=every,
                 episode_returns=states.episode_returns, frames=records)
  (out / "saliency.json").write_text(json.dumps(summary, indent=2) + "\n")
  return summary
