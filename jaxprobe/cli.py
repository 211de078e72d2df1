"""`jaxprobe` command line: the subcommands of `jaxprobe.commands`, in pipeline order.

User errors (`UserError`, and argparse's usage errors) print one line and exit with code 2;
SIGINT and SIGTERM print one line and exit with 130 and 143, keeping the last complete
checkpoint (`jaxprobe.stops`: at a loop's safe point, or at once outside the loops). Each path
a command writes (its module's `WRITES`, names of its arguments) is held for the whole command
(`files.sole_writer`), and a folder the command created but left without a file is removed when
it fails. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import os
import signal
import sys
from pathlib import Path
from typing import NoReturn

from jaxprobe import hosts, stops
from jaxprobe.errors import UserError

# Nothing heavier than the standard library is imported above: `entry` installs the stop
# handlers before numpy, jax and the commands are imported.


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
  hosts.add_flags(parser)
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
    p.set_defaults(run=command.run, writes=getattr(command, "WRITES", ()), many_hosts=getattr(command, "HOSTS", False))
  return parser


# OSErrors that a user fixes (space, quota, permissions), reported in one line rather than as a bug.
WRITE_FAILURES = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG)


def interrupted_line(who: str, signum: int, kept: str = "") -> str:
  """The one line a stopped command prints."""
  return f"{who}: interrupted ({signal.Signals(signum).name}); {kept or 'what was saved before is kept'}"


def end_process(who: str, leftovers: dict[Path, bool], signum: int) -> NoReturn:
  """Ends the process at once on a stop outside the loops (see `jaxprobe.stops`): removes the
  folders the command created and left empty, prints one line, and exits with 128 + signum
  without the interpreter's teardown (native threads still running can crash it)."""
  try:
    if leftovers:
      from jaxprobe.files import remove_new_leftovers

      for path, existed in leftovers.items():
        remove_new_leftovers(path, existed)
    # os.write, not print: the main thread may be inside a write to the same stream (a progress bar).
    os.write(2, (interrupted_line(who, signum) + "\n").encode())
  finally:
    os._exit(128 + signum)


def main(argv: list[str] | None = None, exit_at_once: bool = False) -> int:
  """Parses `argv` (default: sys.argv) and runs the subcommand; returns the exit code.

  A stop outside the loops raises `Interrupted` here, or, with `exit_at_once` (the executable),
  ends the process at once with the same line and exit code."""
  try:
    args = build_parser().parse_args(argv)
  except SystemExit as e:  # --help (0) or a usage error (2), already printed
    return int(e.code or 0)
  from jaxprobe.files import remove_new_leftovers, sole_writer

  who = f"jaxprobe {args.command}"
  written = [Path(p) for name in args.writes if (p := getattr(args, name, None))]
  existed = {p: p.exists() for p in written}
  previous = stops.install(functools.partial(end_process, who, existed) if exit_at_once else None)
  done = False
  try:
    run_on = hosts.from_args(args)
    if run_on.multi and not args.many_hosts:
      from jaxprobe.commands import PIPELINE

      many = ", ".join(c.NAME for c in PIPELINE if getattr(c, "HOSTS", False))
      raise UserError(f"{who} runs on one process; drop --processes (many hosts run: {many})")
    if run_on.multi:
      hosts.initialize(run_on, sys.argv[1:] if argv is None else argv)
      if not hosts.is_leader():  # only process 0 writes (jaxprobe.hosts): only it holds the outputs
        written = []
        existed.clear()
    with contextlib.ExitStack() as held:
      hosts.together(lambda: [held.enter_context(sole_writer(path)) for path in written])
      args.run(args)
    if run_on.multi:
      hosts.finish()
    done = True
  except UserError as e:
    print(f"{who}: error: {e}", file=sys.stderr)
    leave_together(e)
    return 2
  except OSError as e:
    if e.errno not in WRITE_FAILURES:
      raise
    print(
      f"{who}: error: cannot write {e.filename or 'a file'}: {e.strerror}; what was saved "
      "before is kept (free space, or write elsewhere)",
      file=sys.stderr,
    )
    leave_together(e)
    return 2
  except KeyboardInterrupt as e:
    signum = getattr(e, "signum", signal.SIGINT)
    print(interrupted_line(who, signum, getattr(e, "kept", "")), file=sys.stderr)
    return 128 + signum
  finally:
    stops.restore(previous)
    if not done:
      for path in written:
        remove_new_leftovers(path, existed[path])
  return 0


def leave_together(error: BaseException) -> None:
  """After a refusal every process of a run shares (`hosts.together`), leaves with the others: no
  process is taken for lost."""
  if getattr(error, "shared", False):
    hosts.finish()


class QuietParser(argparse.ArgumentParser):
  """A parser that raises instead of printing: the pre-parse leaves every message to `main`."""

  def error(self, message: str) -> NoReturn:
    """Raises SystemExit without printing."""
    raise SystemExit(2)


def many_hosts(argv: list[str]) -> tuple[hosts.Hosts | None, str]:
  """The multi-process settings of a command line and its subcommand, read before the full parse
  (None if they are malformed: `main` then reports them)."""
  pre = QuietParser(add_help=False, allow_abbrev=False)
  hosts.add_flags(pre)
  try:
    known, rest = pre.parse_known_args(argv)
    return hosts.from_args(known), next((a for a in rest if not a.startswith("-")), "")
  except (UserError, SystemExit):
    return None, ""


def entry() -> NoReturn:
  """The `jaxprobe` executable: `main` with stops handled from before the first heavy import, then,
  after an error or an interrupt, an exit that skips the interpreter's teardown (native threads of
  XLA, orbax or envpool still running there can crash it, or print an asyncio traceback after the
  one line)."""
  stops.install(functools.partial(end_process, "jaxprobe", {}))
  run_on, command = many_hosts(sys.argv[1:])
  if run_on is not None and run_on.multi and hosts.CHILD_ENV not in os.environ:
    os._exit(hosts.supervise(f"jaxprobe {command}".strip(), run_on, sys.argv[1:]))
  code = main(exit_at_once=True)
  if code != 0:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
  sys.exit(code)


if __name__ == "__main__":
  entry()
