"""`jaxprobe` command line: the subcommands of `jaxprobe.commands`, in pipeline order.

User errors (`UserError`) print one line and exit with code 2; anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys

from jaxprobe.errors import UserError


def build_parser() -> argparse.ArgumentParser:
  """The parser of every subcommand; each parsed namespace carries its module's `run` as `args.run`."""
  from jaxprobe.commands import PIPELINE

  parser = argparse.ArgumentParser(
    prog="jaxprobe",
    description="Find and visualize the weaknesses of deep RL agents (Rupprecht et al., ICLR 2020) in JAX.",
  )
  sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
  groups = {}
  for command in PIPELINE:
    if isinstance(command.NAME, tuple):  # `jaxprobe dataset info`
      group, action = command.NAME
      if group not in groups:
        groups[group] = sub.add_parser(group, help=command.GROUP_HELP).add_subparsers(
          dest=f"{group}_command", required=True, metavar="ACTION"
        )
      p = groups[group].add_parser(action, help=command.HELP, description=command.DESCRIPTION)
    else:
      p = sub.add_parser(command.NAME, help=command.HELP, description=command.DESCRIPTION)
    command.add_arguments(p)
    p.set_defaults(run=command.run)
  return parser


def main(argv: list[str] | None = None) -> int:
  """Parses `argv` (default: sys.argv) and runs the subcommand; returns the exit code."""
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
