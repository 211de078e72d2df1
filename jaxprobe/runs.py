"""Run directories of long training jobs (agents, generators): resumable, with a curve.

A run directory holds
    config.yaml        the config the run was started with (a resume must match it)
    checkpoints/       orbax CheckpointManager, latest step only: train state + counters
    curve.csv          one row per log interval (steps, wall time, metrics)
    curve.png          the curve of the main metric
and whatever the trainer saves beside them (`agent/`, `generator/`).
"""
from __future__ import annotations

import csv
import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Sequence

import jax
import orbax.checkpoint as ocp
import yaml

from jaxprobe.config import to_dict
from jaxprobe.errors import UserError

# Fields that may differ between a run and its resumption: how long to train, how often to save,
# and how the same computation is implemented.
RESUMABLE_CHANGES = ("total_steps", "stop_after", "checkpoint_every", "log_every", "conv_impl", "loop")


class RunDir:
  """A training run's directory: config check, latest-only checkpoints, curve logging."""

  def __init__(self, out: str | Path, algorithm: str, config: Any, resume: bool):
    self.path = Path(out).absolute()
    self.config = dict(algorithm=algorithm, **to_dict(config))  # loadable by `train-agent --config`
    config_file = self.path / "config.yaml"
    if self.path.exists() and not self.path.is_dir():
      raise UserError(f"run directory {self.path} is a file; choose a directory path")
    if resume:
      if not config_file.is_file():
        raise UserError(f"--resume: {self.path} holds no run (no config.yaml); start it without --resume")
      self._check_same_config(yaml.safe_load(config_file.read_text()) or {})
    elif config_file.exists():
      raise UserError(f"{self.path} already holds a run; pass --resume to continue it or choose "
                      "another --out")
    self.path.mkdir(parents=True, exist_ok=True)
    if not resume:
      config_file.write_text(yaml.safe_dump(self.config, sort_keys=False))
    self.manager = ocp.CheckpointManager(
        self.path / "checkpoints",
        options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True),
        item_names=("state", "meta"))
    self.curve_file = self.path / "curve.csv"

  def _check_same_config(self, saved: dict) -> None:
    current = self.config
    differ = sorted((k != "algorithm", k) for k in set(saved) | set(current)
                    if k not in RESUMABLE_CHANGES and saved.get(k) != current.get(k))
    differ = [k for _, k in differ]  # the algorithm first: it explains every other difference
    if differ:
      k = differ[0]
      raise UserError(f"--resume: {self.path} was started with a different config ({k}: "
                      f"{saved.get(k)!r} there, {current.get(k)!r} now); use the same config or "
                      "another --out")

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, meta: dict) -> None:
    self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(jax.device_get(state)),
                                                    meta=ocp.args.JsonSave(meta)))
    self.manager.wait_until_finished()

  def restore(self, abstract_state: Any) -> tuple[Any, dict]:
    step = self.manager.latest_step()
    if step is None:
      raise UserError(f"--resume: {self.path} has no checkpoint yet; start it again without --resume")
    try:
      restored = self.manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
    except Exception as e:  # orbax raises many types for damaged or mismatched checkpoints
      raise UserError(f"--resume: checkpoint {step} in {self.path} cannot be restored "
                      f"({str(e).splitlines()[0][:160] if str(e) else type(e).__name__})") from None
    return restored["state"], restored["meta"]

  def truncate_curve(self, step: int) -> None:
    """Drops curve rows past `step` (written after the checkpoint a resume starts from)."""
    if not self.curve_file.exists():
      return
    with open(self.curve_file) as f:
      rows = list(csv.DictReader(f))
    kept = [r for r in rows if int(r["step"]) <= step]
    if rows and len(kept) < len(rows):
      self._write_rows(kept, list(rows[0]))

  def log(self, row: dict) -> None:
    new = not self.curve_file.exists()
    with open(self.curve_file, "a", newline="") as f:
      writer = csv.DictWriter(f, fieldnames=list(row))
      if new:
        writer.writeheader()
      writer.writerow(row)

  def _write_rows(self, rows: list[dict], fields: list[str]) -> None:
    tmp = self.curve_file.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
      writer = csv.DictWriter(f, fieldnames=fields)
      writer.writeheader()
      writer.writerows(rows)
    tmp.replace(self.curve_file)

  def close(self) -> None:
    self.manager.close()


def plot_curve(curve_file: Path, out_png: Path, columns: Sequence[str], title: str,
               ylabel: str, xlabel: str = "step", log_y: bool = False) -> None:
  """One line per column of `curve_file` against its `step` column."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  with open(curve_file) as f:
    rows = list(csv.DictReader(f))
  fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
  for column in columns:
    points = [(int(r["step"]), float(r[column])) for r in rows if r.get(column, "") not in ("", "nan")]
    if points:
      ax.plot(*zip(*points), lw=1.5, label=column)
  if ax.get_lines():
    ax.legend(loc="best")
  if log_y:
    ax.set_yscale("log")
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(out_png)
  plt.close(fig)


@dataclasses.dataclass
class Throughput:
  """Env steps per second over the last interval, for progress bars and logs."""
  start_step: int
  start_time: float = dataclasses.field(default_factory=time.perf_counter)

  def rate(self, step: int) -> float:
    return (step - self.start_step) / max(time.perf_counter() - self.start_time, 1e-9)


def metadata_json(obj: Any) -> Any:
  """Round-trips through JSON so numpy scalars become plain numbers."""
  return json.loads(json.dumps(obj, default=lambda x: x.item() if hasattr(x, "item") else str(x)))
