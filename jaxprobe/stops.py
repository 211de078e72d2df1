"""How a command stops on SIGINT (Ctrl-C) or SIGTERM: at a safe point, never inside native code.

An exception raised from a signal handler lands wherever the main thread is: in the middle of an
import, inside a garbage-collection callback of XLA (where Python prints it and carries on, so the
stop is lost), or between two steps of a library's clean-up (a native abort at exit). So the
handler installed here never raises. It records the signal, and then:

- inside `polled()` (the long loops: training, collection, search), the loop calls `check()` at its
  safe points, and `check()` raises `errors.Interrupted` there, so the loop can say what it keeps;
- inside `uninterrupted()` (a checkpoint or file write), the stop waits for the write to finish;
- anywhere else (importing, loading, compiling, outside the loops), or at a second signal in a
  loop (not inside a write, which always finishes first), the process ends at once through the
  `at_once` function the executable gave (`cli.entry`: clean up, print one line, `os._exit`),
  or raises `Interrupted` when none was given (`cli.main` called from Python).

Signals belong to the whole process, so this one piece of state is module-level: `_stop`.
Only the main thread runs signal handlers; `check()` and the blocks work from any thread.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import threading
from typing import Callable, Iterator

from jaxprobe.errors import Interrupted

SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclasses.dataclass
class _Stop:
  signum: int | None = None  # the stop asked for and not yet acted on
  polled: int = 0  # depth of blocks whose loops call check()
  held: int = 0  # depth of uninterrupted() blocks
  at_once: Callable[[int], object] | None = None  # ends the process (does not return)
  lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)


_stop = _Stop()


def _end_now(signum: int) -> None:
  """Outside the loops: the process ends through `at_once`, or `Interrupted` is raised here."""
  _stop.signum = None
  if _stop.at_once is not None:
    _stop.at_once(signum)
  raise Interrupted(signum)


def _handle(signum: int, frame: object) -> None:
  again = _stop.signum is not None
  if not again:
    _stop.signum = signum
  if _stop.held or (_stop.polled and not again):
    return  # acted on at the end of the write, or at the loop's next check()
  _end_now(_stop.signum)


def install(at_once: Callable[[int], object] | None = None) -> tuple:
  """Handles SIGINT and SIGTERM as described above from now on (main thread only); returns what
  `restore` puts back. `at_once(signum)` must end the process."""
  previous = ({s: signal.signal(s, _handle) for s in SIGNALS}, _stop.at_once)
  _stop.at_once = at_once
  return previous


def restore(previous: tuple) -> None:
  """Puts back the handlers and `at_once` that `install` replaced, and forgets a stop not acted on."""
  handlers, _stop.at_once = previous
  for s, handler in handlers.items():
    signal.signal(s, handler)
  _stop.signum = None


def requested() -> int | None:
  """The signal of a stop asked for and not yet acted on, if any."""
  return _stop.signum


def check() -> None:
  """A loop's safe point: raises `Interrupted` if a stop was asked for (and no write is under way)."""
  if _stop.signum is not None and not _stop.held:
    signum, _stop.signum = _stop.signum, None
    raise Interrupted(signum)


@contextlib.contextmanager
def polled() -> Iterator[None]:
  """A block whose loop calls `check()` often: a stop waits for the next `check()` (or the block's end)."""
  with _stop.lock:
    _stop.polled += 1
  try:
    yield
  finally:
    with _stop.lock:
      _stop.polled -= 1
  check()


@contextlib.contextmanager
def uninterrupted() -> Iterator[None]:
  """A block a stop must not cut (a checkpoint or file write): a stop asked for during it takes
  effect right after it, as `check()` inside a polled loop, or at once outside one."""
  with _stop.lock:
    _stop.held += 1
  try:
    yield
  finally:
    with _stop.lock:
      _stop.held -= 1
  if _stop.signum is not None and not _stop.held and threading.current_thread() is threading.main_thread():
    if _stop.polled:
      check()
    else:
      _end_now(_stop.signum)
