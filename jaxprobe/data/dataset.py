"""The dataset format: a directory of `.npy` arrays (memory-mapped) and a JSON manifest.

    DATASET/
      manifest.json   format version, what made it (agent, env, epsilon, seed, command),
                      counts, and per array: shape, dtype, sha256
      colour.npy      (N, 84, 84, 12) uint8  the 4-frame stack in RGB, frame-major, channel-last
      gray.npy        (N, 4, 84, 84)  uint8  exactly what the agent saw (its input layout)
      actions.npy     (N,) int32   the action taken (epsilon-greedy)
      rewards.npy     (N,) float32 raw game reward that followed
      dones.npy       (N,) bool    the game ended after this state
      episodes.npy    (N,) int32   global episode id;  steps.npy (N,) int32 step within it
      q.npy | logits.npy + value.npy   the agent's outputs on the state
      mask.npy        (N, 84, 84) float32  M(x): blurred guided-backprop saliency in [0, 1]

Writing goes to `DATASET.partial/` (with `progress.json` after every flushed
chunk) and the finished directory is renamed into place, so a killed run leaves
the previous complete dataset or a marked partial one that `--resume` continues.
Reading maps the arrays lazily: datasets larger than memory work.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from jaxprobe.bundle import read_versioned_json
from jaxprobe.errors import UserError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PROGRESS = "progress.json"
PARTIAL_SUFFIX = ".partial"


def partial_path(path: str | Path) -> Path:
  path = Path(path)
  return path.with_name(path.name + PARTIAL_SUFFIX)


def write_json_atomic(path: Path, data: Any) -> None:
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
  os.replace(tmp, path)


def sha256_file(path: Path, block: int = 1 << 24) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    while chunk := f.read(block):
      h.update(chunk)
  return h.hexdigest()


def create_arrays(folder: Path, specs: dict[str, tuple[tuple[int, ...], str]]) -> dict[str, np.memmap]:
  """Preallocated `.npy` files, opened for writing."""
  folder.mkdir(parents=True, exist_ok=True)
  return {name: np.lib.format.open_memmap(folder / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)
          for name, (shape, dtype) in specs.items()}


def open_arrays_for_append(folder: Path, names: list[str]) -> dict[str, np.memmap]:
  return {name: np.load(folder / f"{name}.npy", mmap_mode="r+") for name in names}


def write_progress(partial: Path, manifest: dict, count: int, next_episode: int) -> None:
  """Marks `partial` as an unfinished collection with `count` rows written and flushed."""
  write_json_atomic(partial / PROGRESS, dict(manifest=manifest, count=count, next_episode=next_episode))


def read_progress(partial: Path) -> dict:
  try:
    return json.loads((partial / PROGRESS).read_text())
  except (OSError, json.JSONDecodeError):
    raise UserError(f"{partial} has no readable {PROGRESS}; delete it and collect again") from None


def finalise(partial: Path, final: Path, manifest: dict, count: int) -> Path:
  """Checksums every array, writes the manifest and renames the partial directory into place."""
  arrays = {}
  for f in sorted(partial.glob("*.npy")):
    a = np.load(f, mmap_mode="r")
    if a.shape[0] != count:
      raise RuntimeError(f"{f.name} has {a.shape[0]} rows, expected {count}")
    arrays[f.stem] = dict(shape=list(a.shape), dtype=str(a.dtype), sha256=sha256_file(f))
  manifest = dict(manifest, format_version=FORMAT_VERSION, count=count, arrays=arrays)
  write_json_atomic(partial / MANIFEST, manifest)
  (partial / PROGRESS).unlink(missing_ok=True)
  if final.exists():
    raise UserError(f"{final} appeared while collecting; the new dataset stays in {partial}")
  partial.rename(final)
  return final


class Dataset:
  """A finished dataset: the manifest and lazily memory-mapped arrays, checked on opening."""

  def __init__(self, path: Path, manifest: dict, arrays: dict[str, np.ndarray]):
    self.path, self.manifest, self.arrays = path, manifest, arrays

  def __len__(self) -> int:
    return int(self.manifest["count"])

  def __getitem__(self, name: str) -> np.ndarray:
    return self.arrays[name]

  @property
  def agent_fingerprint(self) -> str:
    return self.manifest["agent"]["fingerprint"]


def open_dataset(path: str | Path, verify: bool = True) -> Dataset:
  """Opens a dataset, checking format version, shapes, sizes and (with `verify`) checksums."""
  path = Path(path)
  if not path.is_dir():
    hint = f" (a partial collection is in {partial_path(path)}: finish it with --resume)" \
        if partial_path(path).is_dir() else ""
    raise UserError(f"no dataset at {path}{hint}")
  manifest = read_versioned_json(path / MANIFEST, f"dataset {path}", FORMAT_VERSION, "collect it again")
  arrays = {}
  for name, info in manifest.get("arrays", {}).items():
    f = path / f"{name}.npy"
    if not f.is_file():
      raise UserError(f"dataset {path} is missing {f.name}; collect it again")
    try:
      a = np.load(f, mmap_mode="r")
    except ValueError as e:  # numpy's message for a file shorter than its header says
      raise UserError(f"dataset {path}: {f.name} is truncated or damaged ({e}); collect it again") from None
    if list(a.shape) != info["shape"] or str(a.dtype) != info["dtype"]:
      raise UserError(f"dataset {path}: {f.name} has shape {list(a.shape)} {a.dtype}, the manifest says "
                      f"{info['shape']} {info['dtype']}; collect it again")
    if verify and sha256_file(f) != info["sha256"]:
      raise UserError(f"dataset {path}: {f.name} does not match its checksum (changed or damaged); "
                      "collect it again")
    arrays[name] = a
  return Dataset(path, manifest, arrays)
