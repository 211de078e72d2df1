"""Self-describing checkpoint directories: a JSON spec beside an orbax-checkpointed pytree.

    DIR/<spec file>   format version, everything needed to rebuild the network, and
                      `params_sha256`: the checksum of the pytree, verified on load
    DIR/params/       the pytree (orbax-checkpoint)

A new checkpoint is written to a temporary sibling and renamed into place; an existing one is
replaced in place (tree swapped by renames, spec rewritten atomically), so files kept beside it
(a README, curves) stay and an interrupted save never damages the checkpoint already there.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxprobe.errors import UserError
from jaxprobe.files import write_atomic
from jaxprobe.stops import uninterrupted

TREE_DIR = "params"


@uninterrupted()
def save_bundle(path: str | Path, tree: Any, spec_file: str, spec: dict, what: str) -> Path:
  """Writes `tree` (orbax) and `spec` (JSON, as `spec_file`) to directory `path`; a stop asked for
  meanwhile waits for the end (`stops.uninterrupted`).

  `what` names the kind of checkpoint in errors, e.g. "an agent checkpoint". A new checkpoint is
  written to a temporary sibling and renamed into place. An existing one is replaced in place:
  the new tree is written beside the old, swapped in by renames, and the spec rewritten
  atomically, so the directory's other files (a README, curves) stay, and an interrupted save
  leaves the old tree (as `.params.old-*`) or the new one.
  """
  path = Path(path).absolute()
  if path.exists() and not (path / spec_file).is_file():
    if path.is_file() or any(path.iterdir()):
      raise UserError(f"{path} exists and is not {what}; choose another path")
  text = json.dumps(dict(spec, params_sha256=tree_checksum(tree)), indent=2, sort_keys=True) + "\n"
  tag = uuid.uuid4().hex[:8]
  if not (path / spec_file).is_file():
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{tag}")
    try:
      tmp.mkdir()
      _save_tree(tmp / TREE_DIR, tree)
      (tmp / spec_file).write_text(text)
      if path.exists():
        path.rmdir()  # empty: checked above
      tmp.rename(path)
    finally:
      shutil.rmtree(tmp, ignore_errors=True)
    return path
  new, old = path / f".{TREE_DIR}.tmp-{tag}", path / f".{TREE_DIR}.old-{tag}"
  try:
    _save_tree(new, tree)
    if (path / TREE_DIR).exists():
      (path / TREE_DIR).rename(old)  # moved aside, not deleted, until the new one is in place
    new.rename(path / TREE_DIR)
    write_atomic(path / spec_file, text)
    shutil.rmtree(old, ignore_errors=True)
  finally:
    shutil.rmtree(new, ignore_errors=True)
  return path


def _checkpointer() -> ocp.StandardCheckpointer:
  """An orbax checkpointer of this process alone. On many hosts (`jaxprobe.hosts`) every process
  reads a bundle and one writes it, so no read or write may wait for the others (orbax's default
  is a collective of every process, which one writer alone would wait on for ever)."""
  me = jax.process_index()
  only_me = ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me}, barrier_sync_key_prefix=f"p{me}")
  return ocp.StandardCheckpointer(multiprocessing_options=only_me)


def _save_tree(directory: Path, tree: Any) -> None:
  ckptr = _checkpointer()
  ckptr.save(directory, jax.device_get(tree))
  ckptr.wait_until_finished()
  ckptr.close()


def read_spec(path: str | Path, spec_file: str, what: str, format_version: int) -> dict:
  """The JSON spec of a checkpoint directory, checked to exist and to be of a version we read."""
  path = Path(path)
  if not path.exists():
    raise UserError(f"no {what} at {path}")
  if not (path / spec_file).is_file():
    raise UserError(f"{path} is not {what}: it has no {spec_file}")
  return read_versioned_json(path / spec_file, f"{what} {path}", format_version, "save it again")


def read_versioned_json(file: Path, what: str, format_version: int, remedy: str) -> dict:
  """A JSON file with a `format_version` no newer than this jaxprobe reads, or a UserError."""
  try:
    data = json.loads(file.read_text())
  except (OSError, json.JSONDecodeError) as e:
    raise UserError(f"{what} has no readable {file.name} ({type(e).__name__}); {remedy}") from None
  version = data.get("format_version") if isinstance(data, dict) else None
  if not isinstance(version, int) or version > format_version:
    raise UserError(
      f"{what} has format version {version!r}; this jaxprobe reads versions up to {format_version}: upgrade jaxprobe"
    )
  return data


def tree_checksum(tree: Any) -> str:
  """sha256 of a pytree's leaf names, dtypes, shapes and bytes, as stored."""
  h = hashlib.sha256()
  for key, leaf in jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]:
    a = np.ascontiguousarray(leaf)
    h.update(f"{jax.tree_util.keystr(key)}|{a.dtype}|{a.shape}|".encode() + a.tobytes())
  return h.hexdigest()


def read_tree(path: str | Path, what: str, checksum: str | None = None, verify: bool = True) -> Any:
  """The pytree of a checkpoint directory, or a UserError if it is damaged: unreadable, not matching
  `checksum` (the one its spec recorded; with `verify`), or holding a value that is not finite."""
  ckptr = _checkpointer()
  try:
    tree = ckptr.restore((Path(path) / TREE_DIR).absolute())
  except Exception as e:  # orbax raises many types for damaged files
    first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
    raise UserError(f"{what} {path} is corrupt or unreadable ({first}); save it again") from None
  finally:
    ckptr.close()  # also after a failed read: its event loop and threads are stopped in order
  if verify and checksum is not None and tree_checksum(tree) != checksum:
    raise UserError(
      f"{what} {path} does not match its checksum: its parameters changed since it was saved (damaged or "
      "edited); save it again, or pass --no-verify to load it as it is"
    )
  check_finite(tree, f"{what} {path}")
  return tree


def check_finite(tree: Any, what: str) -> None:
  """A UserError naming the first leaf of `tree` that holds NaN or an infinity."""
  for key, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    if not np.isfinite(np.asarray(leaf, np.float32)).all():
      raise UserError(
        f"{what} holds non-finite values in parameter {jax.tree_util.keystr(key)}: it is damaged, or was saved "
        "from a run that diverged; use another checkpoint"
      )
