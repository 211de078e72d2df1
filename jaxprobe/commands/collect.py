"""`jaxprobe collect`: record the states an agent visits, with its outputs and saliency masks.

    jaxprobe collect --agent AGENT --frames 10000 --epsilon 0.1 --num-envs 8 --out data/seaquest

The recording loop is `collection.recorder.collect`; the dataset format is
`collection.dataset` (docs/collection.md).
"""

from __future__ import annotations

import argparse
import sys

from jaxprobe.agents.checkpoint import load_agent
from jaxprobe.collection.recorder import collect
from jaxprobe.commands import flags
from jaxprobe.config import POSITIVE_INT

NAME = "collect"
WRITES = ("out",)  # held for the whole command (cli.main)
HELP = "record the states an agent visits, with saliency masks"
DESCRIPTION = (
  "The agent plays epsilon-greedily on its grayscale view; every state is recorded with its colour "
  "version, action, reward, episode, the agent's outputs and the blurred guided-backprop mask of its "
  "greedy action."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
  """The subcommand's flags."""
  flags.agent(p)
  flags.env(p)
  p.add_argument("--frames", type=POSITIVE_INT, default=10000, help="number of states to record (default: 10000)")
  flags.epsilon(p, collect)
  flags.from_signature(p, "--num-envs", collect, "num_envs", "games played side by side")
  flags.seed(p, "seed of games and random actions", collect)
  flags.out(p, "dataset directory to create")
  flags.resume(p, "finish the partial collection OUT.partial")
  flags.no_verify(p)
  flags.quiet(p)


def run(args: argparse.Namespace) -> None:
  """Runs the subcommand."""
  agent = load_agent(args.agent, env_id=args.env, verify=not args.no_verify)
  stats = collect(
    agent,
    args.out,
    args.frames,
    env_id=args.env,
    epsilon=args.epsilon,
    num_envs=args.num_envs,
    seed=args.seed,
    resume=args.resume,
    progress=not args.quiet,
    command=" ".join(sys.argv),
  )
  t = stats["times_s"]
  print(
    f"collected {stats['frames']} states into {args.out} in {stats['wall_s']:.1f} s "
    f"({stats['states_per_s']:.0f} states/s; env {t['env']:.1f} s, agent {t['agent']:.1f} s, "
    f"saliency {t['saliency']:.1f} s, writing {t['writing']:.1f} s)"
  )
