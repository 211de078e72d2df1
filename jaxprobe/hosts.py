"""Many processes, one program: JAX's multi-controller runtime, started the same way on every host.

A run on several hosts is the same command on each, plus where to meet and who it is:

    jaxprobe --processes 2 --process-id 0 --coordinator 10.0.0.1:8476 probe ...   # host 0
    jaxprobe --processes 2 --process-id 1 --coordinator 10.0.0.1:8476 probe ...   # host 1

or the same through the environment (`JAXPROBE_PROCESSES`, `JAXPROBE_PROCESS_ID`, and JAX's own
`JAX_COORDINATOR_ADDRESS`); `--coordinator auto` leaves all three to JAX's cluster detection
(TPU pod slices, SLURM, Open MPI). `jax.distributed.initialize` then joins the processes and
`jax.devices()` spans every host's devices, so the meshes of `jaxprobe.parallel` do too.

What jaxprobe adds to JAX's runtime:

- **Agreement.** Right after joining, every process shares its command line (less its process
  id and log folder); if any differs, every process refuses with one line naming the first
  difference, before any work.
- **One writer.** Process 0 (`is_leader`) writes outputs, prints the summary and shows progress;
  the others compute their share and write nothing (`--process-log DIR` keeps each process's own
  output in `DIR/process-<id>.log`).
- **A lost process is an error, not a hang.** JAX's coordination service ends every process
  once one stops sending heartbeats for `--heartbeat-timeout` seconds (jaxprobe's default 20, not
  JAX's 100), and ends a process that cannot join within `--join-timeout` (60). It ends them from
  native code, with a stack trace; so each process runs its command in a child process
  (`supervise`) whose standard error it reads: the native lines go to the process log only,
  and when the child dies that way the process prints one line naming the process that was lost
  and what to do, and exits with `LOST_PROCESS`.

The module imports only the standard library at its top: `cli.entry` calls `supervise` before
JAX is imported.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from jaxprobe.errors import UserError

T = TypeVar("T")
LOST_PROCESS = 75  # EX_TEMPFAIL: start every process again (a run that checkpoints, with --resume)
CHILD_ENV = "JAXPROBE_SUPERVISED"  # set in the child that runs the command
ENV = {"processes": "JAXPROBE_PROCESSES", "process_id": "JAXPROBE_PROCESS_ID", "coordinator": "JAX_COORDINATOR_ADDRESS"}
# Flags that differ between the processes of one run by design; every other flag must agree.
PER_PROCESS = ("--process-id", "--process-log")


@dataclasses.dataclass(frozen=True)
class Hosts:
  """How this process joins a multi-process run (`processes` 1: it does not)."""

  processes: int = 1
  process_id: int = 0
  coordinator: str | None = None  # host:port of process 0, or "auto" (JAX's cluster detection)
  heartbeat_timeout: int = 20  # seconds without a heartbeat before a process counts as lost
  join_timeout: int = 60  # seconds for every process to join
  process_log: str | None = None  # folder for process-<id>.log

  @property
  def multi(self) -> bool:
    """Whether this is a multi-process run."""
    return self.processes > 1 or self.coordinator == "auto"


def add_flags(parser: Any) -> None:
  """The global flags (before the subcommand)."""
  g = parser.add_argument_group("many hosts (docs/hosts.md)")
  g.add_argument("--processes", type=int, default=None, help=f"processes in the run (env {ENV['processes']})")
  g.add_argument("--process-id", type=int, default=None, help=f"this process's index, 0 first ({ENV['process_id']})")
  g.add_argument(
    "--coordinator",
    default=None,
    help=f"host:port of process 0, or 'auto' for JAX's detection on TPU pods and SLURM ({ENV['coordinator']})",
  )
  g.add_argument(
    "--heartbeat-timeout",
    type=int,
    default=Hosts.heartbeat_timeout,
    help="seconds before a silent process counts as lost",
  )
  g.add_argument("--join-timeout", type=int, default=Hosts.join_timeout, help="seconds for every process to join")
  g.add_argument("--process-log", default=None, help="folder for each process's own output, process-<id>.log")


def from_args(args: Any, environ: dict[str, str] | None = None) -> Hosts:
  """The `Hosts` of parsed global flags, the environment filling what they leave unset."""
  environ = os.environ if environ is None else environ

  def pick(name: str, cast: type) -> Any:
    value = getattr(args, name, None)
    if value is None and ENV[name] in environ:
      try:
        value = cast(environ[ENV[name]])
      except ValueError:
        raise UserError(f"{ENV[name]}={environ[ENV[name]]!r} is not a {cast.__name__}") from None
    return value

  processes, process_id, coordinator = pick("processes", int), pick("process_id", int), pick("coordinator", str)
  hosts = Hosts(
    processes=processes or 1,
    process_id=process_id or 0,
    coordinator=coordinator,
    heartbeat_timeout=int(getattr(args, "heartbeat_timeout", Hosts.heartbeat_timeout)),
    join_timeout=int(getattr(args, "join_timeout", Hosts.join_timeout)),
    process_log=getattr(args, "process_log", None),
  )
  if min(hosts.heartbeat_timeout, hosts.join_timeout) < 1:
    raise UserError("--heartbeat-timeout and --join-timeout are seconds, at least 1")
  if processes is not None and processes < 1:
    raise UserError(f"--processes must be at least 1, got {processes}")
  if coordinator == "auto":
    return hosts
  if not 0 <= hosts.process_id < hosts.processes:
    raise UserError(f"--process-id must be in 0..{hosts.processes - 1} for --processes {hosts.processes}")
  if hosts.processes > 1 and not coordinator:
    raise UserError(f"--processes {hosts.processes} needs --coordinator HOST:PORT (process 0's address)")
  return hosts


def shared_command(argv: Sequence[str]) -> list[str]:
  """The command line less what differs per process by design (`PER_PROCESS` flags and their values)."""
  out, skip = [], False
  for arg in argv:
    if skip:
      skip = False
      continue
    name = arg.split("=", 1)[0]
    if name in PER_PROCESS:
      skip = "=" not in arg
      continue
    out.append(arg)
  return out


def initialize(hosts: Hosts, argv: Sequence[str]) -> None:
  """Joins the run (`jax.distributed.initialize` with jaxprobe's timeouts), then checks that every
  process was started with the same command; a difference is a UserError on every process."""
  import jax

  try:
    if hosts.coordinator == "auto":
      jax.distributed.initialize(
        initialization_timeout=hosts.join_timeout, heartbeat_timeout_seconds=hosts.heartbeat_timeout
      )
    else:
      jax.distributed.initialize(
        hosts.coordinator,
        hosts.processes,
        hosts.process_id,
        initialization_timeout=hosts.join_timeout,
        heartbeat_timeout_seconds=hosts.heartbeat_timeout,
      )
  except (RuntimeError, ValueError) as e:  # XlaRuntimeError is a RuntimeError
    first = (str(e).strip().splitlines() or [""])[0][:160]
    raise UserError(
      f"process {hosts.process_id} could not join the run at {hosts.coordinator} within {hosts.join_timeout} s "
      f"({first}); start every process (process 0 first or together) with the same --coordinator"
    ) from None
  try:
    check_same_command(shared_command(argv))
  except UserError:
    jax.distributed.shutdown()  # every process refuses: leave together, so no one counts as lost
    raise


def finish() -> None:
  """Leaves the run once every process has finished its work (a barrier: process 0 may still be
  writing), so that no process ends while another still needs the coordinator."""
  import jax

  jax.distributed.shutdown()


def check_same_command(command: list[str]) -> None:
  """Every process's `command` against process 0's: one line naming the first difference."""
  import numpy as np
  from jax.experimental import multihost_utils

  text = json.dumps(command).encode()
  digest = np.frombuffer(hashlib.sha256(text).digest()[:8], np.int64)
  digests = np.asarray(multihost_utils.process_allgather(digest)).reshape(-1)
  if (digests == digests[0]).all():
    return
  # Someone differs: share the command lines themselves (padded to one length) to say where.
  size = int(np.asarray(multihost_utils.process_allgather(np.array([len(text)], np.int64))).max())
  padded = np.frombuffer(text.ljust(size, b" "), np.uint8)
  rows = np.asarray(multihost_utils.process_allgather(padded)).reshape(len(digests), size)
  commands = [json.loads(bytes(r).decode()) for r in rows]
  other = next(i for i, d in enumerate(digests) if d != digests[0])
  first, theirs = commands[0], commands[other]
  at = next((i for i, (a, b) in enumerate(zip(first, theirs)) if a != b), min(len(first), len(theirs)))
  where = lambda c: " ".join(c[max(0, at - 1) : at + 2]) or "(end)"
  raise UserError(
    f"process {other} was started with another command than process 0 ({where(theirs)!r} where process 0 has "
    f"{where(first)!r}); start every process with the same command and flags"
  )


def together(fn: Callable[[], T]) -> T:
  """`fn()` on every process, whose refusals are shared: if it raises a UserError (or an OSError) on any process, it
  raises one on every process (its own where it failed, one naming the first that failed elsewhere),
  so no process goes on alone into work the others left. Also a barrier. One process: just `fn()`."""
  import jax

  error = None
  try:
    result = fn()
  except (UserError, OSError) as e:  # what `cli.main` turns into one line
    error = e
  if jax.process_count() > 1:
    import numpy as np
    from jax.experimental import multihost_utils

    failed = np.asarray(multihost_utils.process_allgather(np.array([error is not None]))).reshape(-1)
    if error is None and failed.any():
      first = int(np.flatnonzero(failed)[0])
      error = UserError(
        f"process {first} of {len(failed)} refused to start (its own line says why); fix that and start every "
        "process again"
      )
  if error is not None:
    error.shared = True  # every process raises it: `cli.main` leaves the run together (`finish`)
    raise error
  return result


def is_leader() -> bool:
  """Whether this process writes the outputs: process 0 (or the only one)."""
  import jax

  return jax.process_index() == 0


def to_host(x: Any) -> Any:
  """A (possibly multi-process) array as one numpy array on this host: the rows of every process."""
  import jax
  import numpy as np

  if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)


# --- the supervisor: one line instead of a native stack trace when a process is lost ---------------

# Native log lines (absl: severity, date, time, thread, file:line), their stack traces and gloo's notes.
NATIVE = re.compile(
  rb"^([EFWI]\d{4} \d\d:\d\d:\d\d|\*\*\* |    @ |\[Gloo\]|Additional GRPC|:UNKNOWN:|RPC: /|The tasks have|\d+$)"
)
LOST = re.compile(rb"tasks are unhealthy \(stopped sending heartbeats\):\s*\n?\s*(\d+)")
LEADER_LOST = re.compile(rb"leader task was preempted/died|Failed to send RPC to coordination service")


def lost_line(who: str, hosts: Hosts, log: bytes) -> str:
  """The one line for a child ended by JAX's coordination service, from what it logged."""
  m = LOST.search(log)
  if m is not None:
    lost = int(m.group(1))
  elif LEADER_LOST.search(log):
    lost = 0
  else:
    lost = None
  which = "process 0 (the coordinator)" if lost == 0 else f"process {lost}" if lost is not None else "another process"
  return (
    f"{who}: error: {which} of {hosts.processes} stopped (no heartbeat within {hosts.heartbeat_timeout} s, or it "
    f"exited), so process {hosts.process_id} stopped too; start the same command on every host again (a run that "
    "checkpoints continues with --resume)"
  )


def _die_with_parent() -> None:
  """In the child, before it runs: on Linux, end with SIGKILL when the supervisor ends, however it
  ends (a supervisor killed must not leave its computation running)."""
  if sys.platform.startswith("linux"):
    import ctypes

    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def supervise(who: str, hosts: Hosts, argv: Sequence[str]) -> int:
  """Runs `jaxprobe argv` in a child process and returns its exit code, reading its standard error:
  native lines go only to the process log; a child ended by the coordination service becomes one
  line and `LOST_PROCESS`. SIGINT and SIGTERM are passed on to the child (its stop is its own)."""
  log_file = None
  if hosts.process_log:
    Path(hosts.process_log).mkdir(parents=True, exist_ok=True)
    # With JAX's detection the index is known only after joining: the host and pid name the log.
    me = f"{socket.gethostname()}-{os.getpid()}" if hosts.coordinator == "auto" else hosts.process_id
    log_file = open(Path(hosts.process_log) / f"process-{me}.log", "ab")
  env = dict(os.environ, **{CHILD_ENV: "1", "PYTHONUNBUFFERED": "1"})
  # Its own session: a Ctrl-C in the terminal reaches this process only, which passes it on once
  # (a second Ctrl-C would end the child at once, without its safe point).
  child = subprocess.Popen(
    [sys.executable, "-P", "-m", "jaxprobe.cli", *argv],  # -P: not the working directory's modules
    env=env,
    stderr=subprocess.PIPE,
    start_new_session=True,
    preexec_fn=_die_with_parent,
  )
  for signum in (signal.SIGINT, signal.SIGTERM):
    signal.signal(signum, lambda s, _: child.send_signal(s))
  seen = b""  # the native lines, for `lost_line`
  pending = b""
  fd = child.stderr.fileno()
  while chunk := os.read(fd, 1 << 16):
    if log_file is not None:
      log_file.write(chunk)
      log_file.flush()
    pending += chunk
    *lines, pending = pending.split(b"\n")
    out = []
    for line in lines:
      if NATIVE.match(line) or (seen and not line.strip()):
        seen = (seen + line + b"\n")[-(1 << 20) :]  # a bounded tail
      else:
        out.append(line + b"\n")
    if b"\r" in pending:  # a progress bar redraws its line with \r: pass it on now
      head, _, pending = pending.rpartition(b"\r")
      out.append(head + b"\r")
    if out:
      os.write(2, b"".join(out))
  code = child.wait()
  if pending:
    os.write(2, pending)
  if log_file is not None:
    log_file.close()
  if code != 0 and b"JAX distributed service detected fatal errors" in seen:
    os.write(2, (lost_line(who, hosts, seen) + "\n").encode())
    return LOST_PROCESS
  if code != 0 and seen:  # another native failure: its last lines are the diagnosis
    os.write(2, b"\n".join(seen.splitlines()[-20:]) + b"\n")
  return 128 - code if code < 0 else code
