"""`jaxprobe` command line: the subcommands of `jaxprobe.commands`, in pipeline order.

User errors (`UserError`, and argparse's usage errors) print one line and exit with code 2;
SIGINT and SIGTERM print one line and exit with 130 and 143, keeping the last complete
checkpoint. Each path a command writes (its module's `WRITES`, names of its arguments) is held
for the whole command (`files.sole_writer`), and a folder the command created but left without
a file is removed when it fails. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import signal
import sys
from pathlib import Path
from typing import NoReturn

from jaxprobe.errors import Interrupted, UserError
from jaxprobe.files import remove_new_leftovers, sole_writer


class Parser(argparse.ArgumentParser):
  """An argparse parser whose usage errors are one line (what is wrong, and where the help is), exit 2."""

  def error(self, message: str) -> NoReturn:
    """Prints one line and exits with code 2 (argparse's own prints the usage first)."""
    self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
  """The parser of every subcommand; each parsed namespace carries its module's `run` as `args.run`."""
  from jaxprobe.commands import PIPELINE

  parser = Parser(
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
    p.set_defaults(run=command.run, writes=getattr(command, "WRITES", ()))
  return parser


# OSErrors that a user fixes (space, quota, permissions), reported in one line rather than as a bug.
WRITE_FAILURES = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG)


def raise_interrupted(signum: int, frame: object) -> None:
  """Signal handler: stops the command where it is, as Ctrl-C does."""
  raise Interrupted(signum)


def main(argv: list[str] | None = None) -> int:
  """Parses `argv` (default: sys.argv) and runs the subcommand; returns the exit code."""
  try:
    args = build_parser().parse_args(argv)
  except SystemExit as e:  # --help (0) or a usage error (2), already printed
    return int(e.code or 0)
  written = [Path(p) for name in args.writes if (p := getattr(args, name, None))]
  existed = {p: p.exists() for p in written}
  previous = {s: signal.signal(s, raise_interrupted) for s in (signal.SIGINT, signal.SIGTERM)}
  done = False
  try:
    with contextlib.ExitStack() as held:
      for path in written:
        held.enter_context(sole_writer(path))
      args.run(args)
    done = True
  except UserError as e:
    print(f"jaxprobe {args.command}: error: {e}", file=sys.stderr)
    return 2
  except OSError as e:
    if e.errno not in WRITE_FAILURES:
      raise
    print(
      f"jaxprobe {args.command}: error: cannot write {e.filename or 'a file'}: {e.strerror}; what was saved "
      "before is kept (free space, or write elsewhere)",
      file=sys.stderr,
    )
    return 2
  except KeyboardInterrupt as e:
    signum = getattr(e, "signum", signal.SIGINT)
    kept = getattr(e, "kept", "") or "what was saved before is kept"
    print(f"jaxprobe {args.command}: interrupted ({signal.Signals(signum).name}); {kept}", file=sys.stderr)
    return 128 + signum
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
    if not done:
      for path in written:
        remove_new_leftovers(path, existed[path])
  return 0


def entry() -> NoReturn:
  """The `jaxprobe` executable: `main`, then, after an error or an interrupt, an exit that skips the
  interpreter's teardown (native threads of XLA, orbax or envpool still running there can crash it,
  or print an asyncio traceback after the one line)."""
  code = main()
  if code != 0:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
  sys.exit(code)


if __name__ == "__main__":
  entry()
