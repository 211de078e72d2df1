"""`jaxprobe goggles`: the agent's score when it sees only the generator's reconstructions (the paper's Table 1).

jaxprobe goggles --agent jaxprobe/assets/agents/pong --generator jaxprobe/assets/generators/pong --episodes 10
"""

from __future__ import annotations

import argparse

from jaxprobe.agents.checkpoint import load_agent
from jaxprobe.commands import flags
from jaxprobe.files import check_out_file, write_json
from jaxprobe.generator.reconstruction import goggles
from jaxprobe.generator.spec import load_generator

NAME = "goggles"
WRITES = ("json",)
HELP = "score the agent when it sees only the generator's reconstructions"
DESCRIPTION = (
  "Play whole games twice on the same seeds: the agent on its own view, then on the grayscale of "
  "G(E(x)) of every colour observation (the paper's Table 1)."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
  """The subcommand's flags."""
  flags.agent(p)
  flags.generator(p)
  flags.env(p)
  flags.episodes(p, "games per condition")
  flags.epsilon(p, goggles)
  flags.seed(p, "seed of the games", goggles)
  flags.json_out(p, "both score summaries")
  flags.no_verify(p)
  flags.quiet(p)


def run(args: argparse.Namespace) -> None:
  """Runs the subcommand."""
  if args.json:
    check_out_file(args.json, "--json")
  result = goggles(
    load_agent(args.agent, verify=not args.no_verify),
    load_generator(args.generator, verify=not args.no_verify),
    args.episodes,
    env_id=args.env,
    epsilon=args.epsilon,
    seed=args.seed,
    progress=not args.quiet,
  )
  for name in ("agent", "goggles"):
    r = result[name]
    print(f"{name:8s} mean {r['mean']:7.1f}  std {r['std']:6.1f}  min {r['min']:6.0f}  max {r['max']:6.0f}")
  if args.json:
    write_json(args.json, result)
