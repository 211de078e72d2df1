"""Flags that several subcommands share, each defined once."""

from __future__ import annotations

import argparse

AGENT_HELP = "agent checkpoint: a jaxprobe agent directory or a CleanRL .cleanrl_model file"


def agent(p: argparse.ArgumentParser, help: str = AGENT_HELP, required: bool = True) -> None:
  """--agent: the agent checkpoint."""
  p.add_argument("--agent", required=required, default=None, help=help)


def generator(
  p: argparse.ArgumentParser, required: bool = True, help: str = "generator checkpoint (a run's generator/ folder)"
) -> None:
  """--generator: the generator checkpoint."""
  p.add_argument("--generator", required=required, default=None, help=help)


def env(p: argparse.ArgumentParser) -> None:
  """--env: play another game than the agent's own."""
  p.add_argument("--env", default=None, help="envpool Atari id, e.g. Pong-v5 (default: the agent's own game)")


def seed(p: argparse.ArgumentParser, help: str, default: int = 0) -> None:
  """--seed."""
  p.add_argument("--seed", type=int, default=default, help=f"{help} (default: {default})")


def epsilon(p: argparse.ArgumentParser, default: float) -> None:
  """--epsilon: the probability of a random action while playing."""
  p.add_argument(
    "--epsilon", type=float, default=default, help=f"probability of a random action (default: {default:g})"
  )


def episodes(p: argparse.ArgumentParser, help: str = "number of games") -> None:
  """--episodes: whole games to play."""
  p.add_argument("--episodes", type=int, default=10, help=f"{help} (default: 10)")


def out(p: argparse.ArgumentParser, help: str, default: str | None = None) -> None:
  """--out: where the command writes."""
  p.add_argument("--out", required=default is None, default=default, help=help)


def json_out(p: argparse.ArgumentParser, what: str) -> None:
  """--json: a copy of the printed numbers as a JSON file."""
  p.add_argument("--json", default=None, help=f"write {what} as JSON here")


def resume(p: argparse.ArgumentParser, help: str = "continue the run in --out") -> None:
  """--resume."""
  p.add_argument("--resume", action="store_true", help=help)


def overrides(p: argparse.ArgumentParser, example: str) -> None:
  """FIELD=VALUE ...: config overrides after the flags."""
  p.add_argument("overrides", nargs="*", metavar="FIELD=VALUE", help=f"config overrides, e.g. {example}")


def quiet(p: argparse.ArgumentParser, help: str = "no progress bar") -> None:
  """--quiet."""
  p.add_argument("--quiet", action="store_true", help=help)
