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
      ram.npy         (N, 128) uint8       the emulator's memory at the state (datasets since
                                           2026-12; older ones lack it and have no named objects)

Writing goes to `DATASET.partial/` (with `progress.json` after every flushed
chunk) and the finished directory is renamed into place, so a killed run leaves
the previous complete dataset or a marked partial one that `--resume` continues.
Reading maps the arrays lazily: datasets larger than memory work.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from jaxprobe.bundle import read_versioned_json
from jaxprobe.errors import UserError
from jaxprobe.files import write_json

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PROGRESS = "progress.json"
PARTIAL_SUFFIX = ".partial"


def draw_rows(size: int, num: int, seed: int) -> np.ndarray:
  """`min(num, size)` distinct row indices of a dataset of `size` rows, sorted (reads stay in file
  order), drawn by `seed`: every command that measures "num states of the dataset" draws these."""
  return np.sort(np.random.default_rng(seed).choice(size, min(num, size), replace=False))


def partial_path(path: str | Path) -> Path:
  """Where an unfinished collection into `path` lives: `PATH.partial`."""
  path = Path(path)
  return path.with_name(path.name + PARTIAL_SUFFIX)


def sha256_file(path: Path, block: int = 1 << 24) -> str:
  """Hex SHA-256 of a file, read in blocks."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    while chunk := f.read(block):
      h.update(chunk)
  return h.hexdigest()


def create_arrays(folder: Path, specs: dict[str, tuple[tuple[int, ...], str]]) -> dict[str, np.memmap]:
  """Preallocated `.npy` files, opened for writing."""
  folder.mkdir(parents=True, exist_ok=True)
  return {
    name: np.lib.format.open_memmap(folder / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)
    for name, (shape, dtype) in specs.items()
  }


def open_arrays_for_append(folder: Path, names: list[str]) -> dict[str, np.memmap]:
  """The `.npy` files of a partial collection, opened for writing in place."""
  return {name: np.load(folder / f"{name}.npy", mmap_mode="r+") for name in names}


def write_progress(partial: Path, manifest: dict, count: int, next_episode: int) -> None:
  """Marks `partial` as an unfinished collection with `count` rows written and flushed."""
  write_json(partial / PROGRESS, sort_keys=True, data=dict(manifest=manifest, count=count, next_episode=next_episode))


def read_progress(partial: Path) -> dict:
  """What `write_progress` last wrote: the draft manifest, rows written, next episode id."""
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
  write_json(partial / MANIFEST, manifest, sort_keys=True)
  (partial / PROGRESS).unlink(missing_ok=True)
  if final.exists():
    raise UserError(f"{final} appeared while collecting; the new dataset stays in {partial}")
  partial.rename(final)
  return final


def merge(sources: list["Dataset"], out: Path, rows: int = 4096, **fields) -> Path:
  """One dataset at `out` from finished datasets `sources` of one agent, their rows one after the other.

  Episode ids are shifted so that each source's games keep ids of their own. The manifest is the
  first source's with `fields` (what made the whole) laid over it. Written through `PATH.partial` like
  a collection. Parts of another agent, game or array layout are refused (UserError).
  """
  check_mergeable(sources)
  manifest = {k: v for k, v in sources[0].manifest.items() if k not in ("count", "arrays", "format_version")}
  manifest.update(fields)
  partial = partial_path(out)
  total = sum(len(part) for part in sources)
  names = sorted(sources[0].arrays)
  specs = {name: ((total, *sources[0][name].shape[1:]), str(sources[0][name].dtype)) for name in names}
  arrays = create_arrays(partial, specs)
  start, episode_offset = 0, 0
  for part in sources:
    n = len(part)
    for name in names:
      for i in range(0, n, rows):  # in blocks: a part larger than memory is copied too
        block = np.asarray(part[name][i : i + rows])
        arrays[name][start + i : start + i + len(block)] = block + episode_offset if name == "episodes" else block
    episode_offset += int(part["episodes"].max()) + 1 if n else 0
    start += n
  for a in arrays.values():
    a.flush()
  del arrays
  return finalise(partial, out, manifest, total)


def check_mergeable(parts: list["Dataset"]) -> None:
  """Refuses parts that do not belong in one dataset: another agent, game or array layout."""
  layout = lambda d: {name: (tuple(a.shape[1:]), str(a.dtype)) for name, a in d.arrays.items()}
  first = parts[0]
  for part in parts[1:]:
    if part.agent_fingerprint != first.agent_fingerprint:
      raise UserError(
        f"{part.path} was collected by another agent ({part.agent_fingerprint}) than {first.path} "
        f"({first.agent_fingerprint}); merge only one agent's datasets"
      )
    if part.manifest.get("env_id") != first.manifest.get("env_id") or layout(part) != layout(first):
      raise UserError(
        f"{part.path} holds other arrays or another game than {first.path} "
        f"({part.manifest.get('env_id')} vs {first.manifest.get('env_id')}); collect them with one jaxprobe version"
      )


class Dataset:
  """A finished dataset: the manifest and lazily memory-mapped arrays, checked on opening."""

  def __init__(self, path: Path, manifest: dict, arrays: dict[str, np.ndarray]):
    self.path, self.manifest, self.arrays = path, manifest, arrays

  def __len__(self) -> int:
    """Number of states."""
    return int(self.manifest["count"])

  def __getitem__(self, name: str) -> np.ndarray:
    """The memory-mapped array `name` (e.g. "colour", "gray", "mask")."""
    return self.arrays[name]

  @property
  def agent_fingerprint(self) -> str:
    """The fingerprint of the agent that collected it (`agents.agent.fingerprint`)."""
    return self.manifest["agent"]["fingerprint"]


def open_dataset(path: str | Path, verify: bool = True) -> Dataset:
  """Opens a dataset, checking format version, shapes, sizes and (with `verify`) checksums."""
  path = Path(path)
  if not path.is_dir():
    hint = (
      f" (a partial collection is in {partial_path(path)}: finish it with --resume)"
      if partial_path(path).is_dir()
      else ""
    )
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
      raise UserError(
        f"dataset {path}: {f.name} has shape {list(a.shape)} {a.dtype}, the manifest says "
        f"{info['shape']} {info['dtype']}; collect it again"
      )
    if verify and sha256_file(f) != info["sha256"]:
      raise UserError(f"dataset {path}: {f.name} does not match its checksum (changed or damaged); collect it again")
    arrays[name] = a
  return Dataset(path, manifest, arrays)


def summary(dataset: Dataset) -> dict:
  """Counts, action histogram and the raw scores of the games that ended inside the dataset; for a Q
  agent, how decisive its Q-values are: their mean, their spread over the actions (mean over states of
  the standard deviation across actions) and the margin between its best two actions per state."""
  actions = np.asarray(dataset["actions"])
  episodes, rewards, dones = (np.asarray(dataset[k]) for k in ("episodes", "rewards", "dones"))
  finished = np.unique(episodes[dones])
  returns = [float(rewards[episodes == e].sum()) for e in finished]
  m = dataset.manifest
  return dict(
    path=str(dataset.path),
    states=len(dataset),
    env_id=m["env_id"],
    epsilon=m["epsilon"],
    seed=m["seed"],
    agent=dict(kind=m["agent"]["kind"], num_actions=m["agent"]["num_actions"], fingerprint=m["agent"]["fingerprint"]),
    action_histogram=np.bincount(actions, minlength=m["agent"]["num_actions"]).tolist(),
    episodes_started=int(len(np.unique(episodes))),
    games_finished=len(returns),
    game_scores=returns,
    mean_game_score=float(np.mean(returns)) if returns else None,
  ) | (dict(q_values=q_summary(np.asarray(dataset["q"], np.float32))) if "q" in dataset.arrays else {})


def q_summary(q: np.ndarray) -> dict:
  """Of Q-values `(N, A)`: mean, mean spread over actions, and percentiles of the best-minus-second margin."""
  top = np.sort(q, axis=1)
  margin = top[:, -1] - top[:, -2]
  return dict(
    mean=float(q.mean()),
    spread_over_actions=float(q.std(axis=1).mean()),
    margin_best_two={f"p{p}": float(np.percentile(margin, p)) for p in (10, 50, 90)},
  )
