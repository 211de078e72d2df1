"""Flags that several subcommands share, each defined once; defaults read from the functions they feed.

A flag that sets an argument of an API function takes its default from that function's
signature (`from_signature`), so a default is written once, in the function. Numeric flags are
typed by a `config.Range` (a count is >= 1 unless the flag says otherwise), so argparse refuses
a value out of range before any work starts.
"""

from __future__ import annotations

import argparse
import inspect
from typing import Any, Callable

from jaxprobe.config import FINITE, POSITIVE_INT, PROBABILITY, SEED

AGENT_HELP = (
  "agent checkpoint: a jaxprobe agent directory, a CleanRL .cleanrl_model file, a Stable-Baselines3 .zip or a "
  "Dopamine JAX ckpt.N (or its run folder)"
)


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


def default_of(fn: Callable, name: str) -> Any:
  """The default of parameter `name` in `fn`'s signature."""
  default = inspect.signature(fn).parameters[name].default
  if default is inspect.Parameter.empty:
    raise TypeError(f"{fn.__name__}'s parameter {name} has no default")
  return default


def from_signature(p: argparse.ArgumentParser, flag: str, fn: Callable, name: str, help: str, **kwargs: Any) -> None:
  """A flag for parameter `name` of `fn`, typed and defaulted as that parameter."""
  default = default_of(fn, name)
  if isinstance(default, (int, float)) and not isinstance(default, bool):
    kwargs.setdefault("type", POSITIVE_INT if isinstance(default, int) else FINITE)
  p.add_argument(flag, default=default, help=f"{help} (default: {default})", **kwargs)


def seed(p: argparse.ArgumentParser, help: str, fn: Callable) -> None:
  """--seed, defaulted as `fn`'s `seed`."""
  from_signature(p, "--seed", fn, "seed", help, type=SEED)


def epsilon(p: argparse.ArgumentParser, fn: Callable, help: str = "probability of a random action") -> None:
  """--epsilon: the probability of a random action while playing, defaulted as `fn`'s `epsilon`."""
  from_signature(p, "--epsilon", fn, "epsilon", help, type=PROBABILITY)


def episodes(p: argparse.ArgumentParser, help: str = "number of games") -> None:
  """--episodes: whole games to play."""
  p.add_argument("--episodes", type=POSITIVE_INT, default=10, help=f"{help} (default: 10)")


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


def no_verify(p: argparse.ArgumentParser) -> None:
  """--no-verify: skip the checksums of checkpoints and datasets read (shapes and finite values are still checked)."""
  p.add_argument(
    "--no-verify",
    action="store_true",
    help="skip the checksum check of the checkpoints and datasets read (faster on large datasets)",
  )


def quiet(p: argparse.ArgumentParser, help: str = "no progress bar") -> None:
  """--quiet."""
  p.add_argument("--quiet", action="store_true", help=help)
