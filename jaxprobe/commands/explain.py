"""`jaxprobe saliency`: play an agent, explain what it looks at, write images a person can scan.

    jaxprobe saliency --agent jaxprobe/assets/agents/seaquest --frames 8 --every 10 --warmup 150 --out DIR

One PNG per state (saliency heat over the newest frame), grid.png with all of them, and
saliency.json with the agent's outputs. The methods: docs/saliency.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import numpy as np

from jaxprobe import saliency
from jaxprobe.agents.agent import Agent, greedy_actions
from jaxprobe.agents.checkpoint import load_agent
from jaxprobe.agents.play import record_states
from jaxprobe.commands import flags
from jaxprobe.config import COUNT
from jaxprobe.errors import UserError
from jaxprobe.files import prepare_out_dir, save_png, write_json
from jaxprobe.parallel import map_in_batches
from jaxprobe.report.images import grid, heatmap_overlay

NAME = "saliency"
WRITES = ("out",)  # held for the whole command (cli.main)
HELP = "play an agent and draw what it looks at"
DESCRIPTION = (
  "Play an agent in its game, compute a saliency map for the states it visits, and write one PNG per "
  "state (heat over the newest frame), grid.png with all of them, and saliency.json with the agent's "
  "outputs."
)
BATCH = 16


def add_arguments(p: argparse.ArgumentParser) -> None:
  """The subcommand's flags."""
  flags.agent(p)
  flags.env(p)
  flags.from_signature(p, "--method", explain_play, "method", f"saliency method: {', '.join(saliency.METHODS)}")
  flags.from_signature(p, "--frames", explain_play, "frames", "number of states to explain")
  flags.out(p, "output directory (created if missing)")
  p.add_argument(
    "--output",
    default=None,
    help="which output to explain: q, logits or value (default: the greedy action's q or logit)",
  )
  flags.from_signature(
    p, "--warmup", explain_play, "warmup", "agent steps played before the first kept state", type=COUNT
  )
  flags.from_signature(p, "--every", explain_play, "every", "keep every N-th state after the warm-up")
  flags.epsilon(p, explain_play, "probability of a random action while playing")
  flags.seed(p, "seed of the game and of random choices", explain_play)
  flags.no_verify(p)
  flags.quiet(p)


def run(args: argparse.Namespace) -> None:
  """Runs the subcommand."""
  agent = load_agent(args.agent, env_id=args.env, verify=not args.no_verify)
  summary = explain_play(
    agent,
    args.out,
    method=args.method,
    frames=args.frames,
    env_id=args.env,
    head=args.output,
    warmup=args.warmup,
    every=args.every,
    epsilon=args.epsilon,
    seed=args.seed,
    progress=not args.quiet,
  )
  print(f"wrote {len(summary['frames'])} {args.method} saliency frames, grid.png and saliency.json to {args.out}")


def explain_play(
  agent: Agent,
  out: str | Path,
  method: str = "guided",
  frames: int = 16,
  env_id: str | None = None,
  head: str | None = None,
  warmup: int = 100,
  every: int = 4,
  epsilon: float = 0.0,
  seed: int = 0,
  progress: bool = True,
) -> dict:
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
  states = record_states(
    agent, frames, env_id, warmup=warmup, every=every, epsilon=epsilon, seed=seed, progress=progress
  )

  spec = agent.spec

  @jax.jit
  def explain(params, obs, key):
    return spec.apply(params, obs), saliency.saliency_mask(
      saliency.compute(method, spec, params, obs, key=key, head=head)
    )

  # Batches of 16 bound the memory of the multi-pass methods; each batch's key is the seed
  # plus its first row, so a state's SmoothGrad noise does not depend on how many are explained.
  starts = np.arange(frames) // BATCH * BATCH
  outputs, masks = map_in_batches(
    lambda obs, start: explain(agent.params, obs, jax.random.key(seed + int(start[0]))),
    states.obs,
    starts,
    batch_size=BATCH,
  )
  greedy = np.asarray(greedy_actions(spec, outputs))

  images, captions, records = [], [], []
  for i in range(frames):
    img = heatmap_overlay(states.obs[i, -1], masks[i])
    save_png(out / f"frame_{i:03d}.png", img)
    images.append(img)
    head_out = outputs[spec.action_head][i]
    captions.append(f"step {states.steps[i]}  action {states.actions[i]}  {spec.action_head} {head_out.max():.2f}")
    records.append(
      dict(
        frame=f"frame_{i:03d}.png",
        step=int(states.steps[i]),
        action_taken=int(states.actions[i]),
        greedy_action=int(greedy[i]),
        outputs={k: np.asarray(v[i]).round(6).tolist() for k, v in outputs.items()},
      )
    )
  save_png(out / "grid.png", grid(images, captions, cols=4))
  summary = dict(
    method=method,
    env_id=env_id or spec.env_id,
    agent=spec.to_json(),
    agent_metadata=agent.metadata,
    explained_output=head or spec.action_head,
    explained_action="greedy",
    epsilon=epsilon,
    seed=seed,
    warmup=warmup,
    every=every,
    episode_returns=states.episode_returns,
    frames=records,
  )
  write_json(out / "saliency.json", summary)
  return summary
