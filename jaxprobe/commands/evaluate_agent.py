"""`jaxprobe evaluate-agent`: an agent's raw score over whole games of the real game.

jaxprobe evaluate-agent --agent jaxprobe/assets/agents/pong --episodes 10 --gif pong.gif
"""

from __future__ import annotations

import argparse

from jaxprobe.agents.checkpoint import load_agent
from jaxprobe.agents.play import POLICIES, evaluate, policy_name
from jaxprobe.commands import flags
from jaxprobe.files import check_out_file, write_gif, write_json

NAME = "evaluate-agent"
WRITES = ("gif", "json")
HELP = "score an agent over whole games of the real game"
DESCRIPTION = (
  "Play N whole games (no episodic life, no reward clipping) and print the mean, std, min and max raw game score."
)
GIF_MAX_STEPS = 2000  # agent steps of game 0 kept for --gif


def add_arguments(p: argparse.ArgumentParser) -> None:
  """The subcommand's flags."""
  flags.agent(p)
  flags.env(p)
  flags.episodes(p)
  flags.epsilon(p, evaluate)
  flags.from_signature(
    p,
    "--policy",
    evaluate,
    "policy",
    "greedy (epsilon-greedy), sample (from an actor-critic agent's policy), or auto: sample for actor-critic "
    "agents, greedy for Q agents",
    choices=POLICIES,
  )
  flags.seed(p, "seed of the games and random actions", evaluate)
  p.add_argument("--gif", default=None, help="write the first game as an animated GIF here")
  flags.json_out(p, "the scores")
  flags.no_verify(p)
  flags.quiet(p)


def run(args: argparse.Namespace) -> None:
  """Runs the subcommand."""
  for path, flag in ((args.gif, "--gif"), (args.json, "--json")):
    if path:
      check_out_file(path, flag)
  agent = load_agent(args.agent, env_id=args.env, verify=not args.no_verify)
  played = evaluate(
    agent,
    args.episodes,
    env_id=args.env,
    epsilon=args.epsilon,
    seed=args.seed,
    keep_frames=GIF_MAX_STEPS if args.gif else 0,
    progress=not args.quiet,
    policy=args.policy,
  )
  policy = policy_name(agent.spec, args.policy)
  result = dict(
    played.summary(), env_id=args.env or agent.spec.env_id, epsilon=args.epsilon, seed=args.seed, policy=policy
  )
  how = "actions sampled from the policy" if policy == "sample" else f"epsilon-greedy, epsilon {args.epsilon}"
  print(
    f"{result['env_id']}: mean {result['mean']:.1f}  std {result['std']:.1f}  min {result['min']:.0f}  "
    f"max {result['max']:.0f}  over {result['episodes']} games ({how})"
  )
  if args.gif:
    write_gif(args.gif, list(played.frames))
  if args.json:
    write_json(args.json, result)
