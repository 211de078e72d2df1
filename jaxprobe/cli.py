"""`jaxprobe` command line: each subcommand parses flags and calls one API function.

User errors (`UserError`) print one line and exit with code 2; anything else
is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import sys

from jaxprobe.errors import UserError


def _saliency(args: argparse.Namespace) -> None:
  from jaxprobe.agents.checkpoint import load_agent
  from jaxprobe.report.saliency_frames import explain_play
  agent = load_agent(args.agent, env_id=args.env)
  summary = explain_play(agent, args.out, method=args.method, frames=args.frames, env_id=args.env,
                         head=args.output, warmup=args.warmup, every=args.every,
                         epsilon=args.epsilon, seed=args.seed, progress=not args.quiet)
  print(f"wrote {len(summary['frames'])} {args.method} saliency frames, grid.png and "
        f"saliency.json to {args.out}")


def build_parser() -> argparse.ArgumentParser:
  from jaxprobe import saliency
  parser = argparse.ArgumentParser(
      prog="jaxprobe",
      description="Find and visualize the weaknesses of deep RL agents (Rupprecht et al., ICLR 2020) in JAX.")
  sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

  p = sub.add_parser("saliency", help="play an agent and draw what it looks at",
                     description="Play an agent in its game, compute a saliency map for the states it "
                                 "visits, and write one PNG per state (heat over the newest frame), "
                                 "grid.png with all of them, and saliency.json with the agent's outputs.")
  p.add_argument("--agent", required=True, help="agent checkpoint: a jaxprobe agent directory or a "
                                                "CleanRL .cleanrl_model file")
  p.add_argument("--env", default=None, help="envpool Atari id, e.g. Pong-v5 (default: the agent's own game)")
  p.add_argument("--method", default="guided", help=f"saliency method: {', '.join(saliency.METHODS)} "
                                                     "(default: guided)")
  p.add_argument("--frames", type=int, default=16, help="number of states to explain (default: 16)")
  p.add_argument("--out", required=True, help="output directory (created if missing)")
  p.add_argument("--output", default=None, help="which output to explain: q, logits or value "
                                                "(default: the greedy action's q or logit)")
  p.add_argument("--warmup", type=int, default=100, help="agent steps played before the first kept state (default: 100)")
  p.add_argument("--every", type=int, default=4, help="keep every N-th state after the warm-up (default: 4)")
  p.add_argument("--epsilon", type=float, default=0.0, help="probability of a random action while playing (default: 0)")
  p.add_argument("--seed", type=int, default=0, help="seed of the game and of random choices (default: 0)")
  p.add_argument("--quiet", action="store_true", help="no progress bar")
  p.set_defaults(run=_saliency)
  return parser


def main(argv: list[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  try:
    args.run(args)
  except UserError as e:
    print(f"jaxprobe {args.command}: error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print(f"jaxprobe {args.command}: interrupted", file=sys.stderr)
    return 130
  return 0


if __name__ == "__main__":
  sys.exit(main())
