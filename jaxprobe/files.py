"""Files written whole or not at all, and output paths checked before any work starts.

Every JSON, HTML, PNG and GIF file jaxprobe writes goes through `write_atomic`: the
bytes go to a temporary sibling that replaces the target only once complete, so a reader
(or a second run) never sees half a file. (A training curve grows by appended rows, and
`bundle.save_bundle` swaps a checkpoint's tree by renames.)

A command holds each folder or file it writes with `sole_writer` for as long as it runs, so a
second jaxprobe command that would write the same path is refused with the first one's pid and
command line. The hold is an advisory `flock` on a lock file kept outside the user's folders (in
the temp dir, named by a hash of the path): the kernel releases it when its holder exits however
it exits, so a crashed or killed run never blocks the next.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from PIL import Image

from jaxprobe.errors import UserError
from jaxprobe.stops import uninterrupted


def write_atomic(path: str | Path, data: str | bytes) -> Path:
  """Writes `data` to `path` through a temporary sibling renamed into place."""
  path = Path(path)
  tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
  with uninterrupted():  # a stop waits for the rename, so no temporary file is left behind
    try:
      if isinstance(data, bytes):
        tmp.write_bytes(data)
      else:
        tmp.write_text(data)
      os.replace(tmp, path)
    finally:
      tmp.unlink(missing_ok=True)
  return path


def plain(obj: Any) -> Any:
  """`obj` as plain JSON data: numpy scalars and arrays become numbers and lists."""

  def default(x):
    if hasattr(x, "tolist"):
      return x.tolist()
    return x.item() if hasattr(x, "item") else str(x)

  return json.loads(json.dumps(obj, default=default))


def write_json(path: str | Path, data: Any, indent: int | None = 2, sort_keys: bool = False) -> Path:
  """`data` as JSON (numpy values made plain), written atomically, with a final newline."""
  return write_atomic(path, json.dumps(plain(data), indent=indent, sort_keys=sort_keys) + "\n")


def check_dir_path(path: str | Path, what: str = "output directory") -> Path:
  """`path`, or a UserError if a file is in the way of the directory it must be."""
  path = Path(path)
  if path.exists() and not path.is_dir():
    raise UserError(f"{what} {path} is a file; choose a directory path")
  return path


def prepare_out_dir(out: str | Path) -> Path:
  """Creates the output directory `out` (and its parents), or a UserError if it cannot be one."""
  out = check_dir_path(out)
  try:
    out.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise UserError(f"cannot create output directory {out}: {e.strerror}") from None
  return out


def check_out_file(path: str | Path, flag: str) -> Path:
  """The output file `path` of option `flag`, checked before the work that fills it starts."""
  path = Path(path)
  if path.is_dir():
    raise UserError(f"{flag} {path} is a directory; give a file path")
  if not path.parent.is_dir():
    raise UserError(f"cannot write {path}: the folder {path.parent} does not exist")
  return path


def lock_file(path: str | Path) -> Path:
  """Where the hold on `path` is kept: a file in the temp dir named by a hash of `path`'s absolute form."""
  key = hashlib.sha256(str(Path(path).absolute().resolve()).encode()).hexdigest()[:32]
  folder = Path(os.environ.get("JAXPROBE_LOCK_DIR") or Path(tempfile.gettempdir()) / f"jaxprobe-locks-{os.getuid()}")
  folder.mkdir(parents=True, exist_ok=True)
  return folder / f"{key}.lock"


@contextlib.contextmanager
def sole_writer(path: str | Path) -> Iterator[Path]:
  """Holds `path` (a folder or file this process writes) until the block ends; a UserError naming the
  holder if another process holds it."""
  lock = lock_file(path)
  while True:
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
      os.close(fd)
      raise UserError(
        f"{path} is being written by another jaxprobe command ({holder}); wait for it to end, or write elsewhere"
      ) from None
    # The previous holder may have removed the file between our open and our lock: hold the file that is there.
    try:
      same = os.fstat(fd).st_ino == os.stat(lock).st_ino
    except FileNotFoundError:
      same = False
    if same:
      break
    os.close(fd)
  try:
    command = " ".join(["jaxprobe", *sys.argv[1:]])[:300]
    since = time.strftime("%Y-%m-%d %H:%M:%S")
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {since}: {command}".encode(), 0)
    yield Path(path)
  finally:
    os.unlink(lock)  # while still held, so no one holds a file that is no longer there
    os.close(fd)


def remove_new_leftovers(path: str | Path, existed: bool) -> None:
  """After a failed command: removes `path` if the command created it (`existed` is False) and it holds
  no file, only empty folders. (`write_atomic` removes its own temporary file.)"""
  path = Path(path)
  if not existed and path.is_dir() and not any(p.is_file() or p.is_symlink() for p in path.rglob("*")):
    shutil.rmtree(path, ignore_errors=True)


def png_bytes(image: np.ndarray, optimize: bool = False) -> bytes:
  """An `(H, W, 3)` uint8 image encoded as PNG."""
  buf = io.BytesIO()
  Image.fromarray(np.asarray(image, np.uint8)).save(buf, format="PNG", optimize=optimize)
  return buf.getvalue()


def save_png(path: str | Path, image: np.ndarray) -> Path:
  """Writes an `(H, W, 3)` uint8 image as PNG, whole or not at all."""
  return write_atomic(path, png_bytes(image))


def write_gif(path: str | Path, frames: Sequence[np.ndarray], scale: int = 2, every: int = 2) -> None:
  """An animated GIF of agent-step frames `(H, W)` or `(H, W, 3)` uint8: every `every`-th, `scale`x larger."""
  up = lambda f: np.kron(f, np.ones((scale, scale) + (1,) * (f.ndim - 2), np.uint8))
  images = [Image.fromarray(up(f)) for f in frames[::every]]
  if images:
    # 4 frames per agent step at 60 Hz, every 2nd step kept: about 133 ms per image.
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=133, loop=0)
    write_atomic(path, buf.getvalue())
