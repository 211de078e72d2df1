"""Files written whole or not at all, and output paths checked before any work starts.

Every JSON, HTML, PNG and GIF file jaxprobe writes goes through `write_atomic`: the
bytes go to a temporary sibling that replaces the target only once complete, so a reader
(or a second run) never sees half a file. (A training curve grows by appended rows, and
`bundle.save_bundle` swaps a checkpoint's tree by renames.)
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from jaxprobe.errors import UserError


def write_atomic(path: str | Path, data: str | bytes) -> Path:
  """Writes `data` to `path` through a temporary sibling renamed into place."""
  path = Path(path)
  tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
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
