"""Run directories of long training jobs (agents, generators) and the one loop that drives them.

A run directory holds
    config.yaml        the config the run was started with (a resume must match it)
    checkpoints/       orbax CheckpointManager, latest step only: train state + counters
    curve.csv          one row per log interval (steps, wall time, metrics)
    curve.png          the curve of the main metric
and whatever the trainer saves beside them (`agent/`, `generator/`).

Every trainer (`agents.ppo`, `agents.dqn`, `generator.train`) is an iterator of
`(state, step, metrics)` that writes nothing; `drive` runs one through a run directory:
resume, progress bar, curve rows, checkpoints, and a stop on a non-finite loss.
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp
import yaml
from tqdm.auto import tqdm

from jaxprobe.config import to_dict
from jaxprobe.errors import UserError
from jaxprobe.files import check_dir_path, write_atomic
from jaxprobe.parallel import is_prng_key
from jaxprobe.stops import check, polled, uninterrupted

# Fields that may differ between a run and its resumption: how long to train, how often to save,
# and how the same computation is implemented.
RESUMABLE_CHANGES = ("total_steps", "stop_after", "checkpoint_every", "log_every", "conv_impl", "loop", "fit_prior")


class RunDir:
  """A training run's directory: config check, latest-only checkpoints, curve logging.

  On many hosts every process opens it (each checks it, and every process takes part in each
  checkpoint: orbax's multi-process save, which process 0 commits), and only the one with
  `writer` True writes the config, the curve and the side tables.
  """

  def __init__(self, out: str | Path, algorithm: str, config: Any, resume: bool, writer: bool = True):
    self.path = Path(out).absolute()
    self.writer = writer
    self.config = dict(algorithm=algorithm, **to_dict(config))  # loadable by `train-agent --config`
    # A field added to the config after a run was started counts as its default there.
    self.defaults = dict(algorithm=algorithm, **to_dict(type(config)()))
    config_file = self.path / "config.yaml"
    check_dir_path(self.path, "run directory")
    if resume:
      if not config_file.is_file():
        raise UserError(f"--resume: {self.path} holds no run (no config.yaml); start it without --resume")
      self._check_same_config(yaml.safe_load(config_file.read_text()) or {})
    elif config_file.exists():
      if has_checkpoint(self.path / "checkpoints"):
        raise UserError(f"{self.path} already holds a run; pass --resume to continue it or choose another --out")
      # A run that ended before its first checkpoint is started again over its own folder.
      for leftover in (config_file, *self.path.glob("*.csv")) if writer else ():
        leftover.unlink()
    if writer:
      self.path.mkdir(parents=True, exist_ok=True)
    if writer and not resume:
      write_atomic(config_file, yaml.safe_dump(self.config, sort_keys=False))
    self.manager = ocp.CheckpointManager(
      self.path / "checkpoints",
      options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True),
      item_names=("state", "meta"),
    )
    self.curve_file = self.path / "curve.csv"
    self.wall_before = 0.0  # seconds of training before this process (set by `resume`)
    self._curve_fields: list[str] | None = None  # curve.csv's header, once known

  def _check_same_config(self, saved: dict) -> None:
    current = self.config
    saved = {k: saved.get(k, self.defaults.get(k)) for k in set(saved) | set(current)}
    differ = sorted(
      (k != "algorithm", k)
      for k in set(saved) | set(current)
      if k not in RESUMABLE_CHANGES and saved.get(k) != current.get(k)
    )
    differ = [k for _, k in differ]  # the algorithm first: it explains every other difference
    if differ:
      k = differ[0]
      raise UserError(
        f"--resume: {self.path} was started with a different config ({k}: "
        f"{saved.get(k)!r} there, {current.get(k)!r} now); use the same config or "
        "another --out"
      )

  def latest_step(self) -> int | None:
    """The step of the latest checkpoint, or None."""
    return self.manager.latest_step()

  def save(self, step: int, state: Any, meta: dict) -> None:
    """Saves `state` and `meta` as checkpoint `step` (the previous one is dropped) and waits for it."""
    self.manager.save(
      step, args=ocp.args.Composite(state=ocp.args.StandardSave(stored(state)), meta=ocp.args.JsonSave(meta))
    )
    self.manager.wait_until_finished()

  def restore(self, abstract_state: Any) -> tuple[Any, dict]:
    """The latest checkpoint as (state shaped like `abstract_state`, meta), or a UserError."""
    step = self.manager.latest_step()
    if step is None:
      raise UserError(f"--resume: {self.path} has no checkpoint yet; start it again without --resume")
    try:
      restored = self.manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore())
      )
    except Exception as e:  # orbax raises many types for damaged or mismatched checkpoints
      raise UserError(
        f"--resume: checkpoint {step} in {self.path} cannot be restored "
        f"({str(e).splitlines()[0][:160] if str(e) else type(e).__name__})"
      ) from None
    return restored["state"], restored["meta"]

  def resume(self, abstract_state: Any) -> Any:
    """The latest checkpoint's state; the curve and the side tables lose rows logged after it."""
    state, meta = self.restore(abstract_state)
    self.wall_before = meta["wall_time"]
    for table in sorted(self.path.glob("*.csv")) if self.writer else ():
      truncate_table(table, meta["step"])
    return state

  def log(self, row: dict) -> None:
    """Appends one row to curve.csv (the header first if the file is new).

    A curve begun by an earlier version keeps its columns: the row is written in the order of
    the file's header, columns it lacks left empty, columns the header lacks dropped.
    """
    if not self.writer:
      return
    if self._curve_fields is None:  # read once: later rows follow the same header
      if self.curve_file.exists() and self.curve_file.stat().st_size:
        with open(self.curve_file, newline="") as f:
          self._curve_fields = next(csv.reader(f))
      else:
        self._curve_fields = list(row)
        with open(self.curve_file, "w", newline="") as f:
          csv.DictWriter(f, fieldnames=self._curve_fields).writeheader()
    with open(self.curve_file, "a", newline="") as f:
      csv.DictWriter(f, fieldnames=self._curve_fields, restval="", extrasaction="ignore").writerow(row)

  def record(self, table: str, row: dict) -> None:
    """Sets the row of `row["step"]` in the run's side table `table` (a CSV, e.g. a check made at each
    checkpoint). Rows of that step and later ones (left by a process that died after its last
    checkpoint) are replaced; the file is rewritten atomically."""
    if not self.writer:
      return
    path, rows = self.path / table, []
    if path.exists():
      with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if int(r["step"]) < row["step"]]
    write_csv(path, [*rows, row], list(dict.fromkeys([*(rows[0] if rows else {}), *row])))

  def close(self) -> None:
    """Waits for pending checkpoint writes and releases the manager."""
    self.manager.close()


def stored(state: Any) -> Any:
  """What a checkpoint holds of a train state: host arrays, which restore on any number of devices
  and processes, but PRNG keys as they are (orbax stores a key's type; on many hosts the key is a
  global array, which orbax's multi-process save needs: every process calls it, process 0 writes)."""
  return jax.tree.map(lambda x: x if is_prng_key(x) else np.asarray(x), state)


def has_checkpoint(folder: Path) -> bool:
  """Whether an orbax checkpoint folder holds a finished step (a step folder, not a temporary one)."""
  return folder.is_dir() and any(p.is_dir() and p.name.isdigit() for p in folder.iterdir())


def truncate_table(path: Path, step: int) -> None:
  """Drops the rows of a run's table (curve.csv, a side table) past `step`: written after the checkpoint a
  resume starts from."""
  with open(path, newline="") as f:
    rows = list(csv.DictReader(f))
  kept = [r for r in rows if int(r["step"]) <= step]
  if rows and len(kept) < len(rows):
    write_csv(path, kept, list(rows[0]))


def write_csv(path: Path, rows: list[dict], fields: list[str]) -> None:
  """Writes `rows` under header `fields` atomically (missing values empty)."""
  text = io.StringIO()
  writer = csv.DictWriter(text, fieldnames=fields, lineterminator="\r\n", restval="")
  writer.writeheader()
  writer.writerows(rows)
  write_atomic(path, text.getvalue())


def plot_curve(
  curve_file: Path,
  out_png: Path,
  columns: Sequence[str],
  title: str,
  ylabel: str,
  xlabel: str = "step",
  log_y: bool = False,
) -> None:
  """One line per column of `curve_file` against its `step` column."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  if not Path(curve_file).exists():  # a run saved before its first curve row
    return
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


def drive(
  run: RunDir,
  updates: Iterator[tuple[Any, int, dict]],
  state: Any,
  *,
  end: int,
  log_every: int,
  checkpoint_every: int,
  save: Callable[[Any, int, float], None],
  desc: str,
  progress: bool = True,
  postfix: Sequence[str] = (),
  finite: Sequence[str] = (),
  every: Sequence[tuple[int, Callable[[Any, int], None]]] = (),
) -> tuple[Any, int]:
  """Runs a trainer's `(state, step, metrics)` iterator from `state` (at `state.step`) towards step `end`.

  A curve row (step, wall time, steps/s, metrics) is logged and `save(state, step, wall_time)`
  called each time the step crosses a multiple of `log_every` / `checkpoint_every`, and once at
  the end; `every` adds other `(interval, fn(state, step))` hooks. If a metric named in `finite`
  is not finite, the run stops with a UserError before that state is kept.
  Returns the last state and step.
  """
  t0, step = time.perf_counter(), int(state.step)
  start = step
  wall = lambda: run.wall_before + time.perf_counter() - t0
  rate_start, rate_t0 = start, t0
  bar = tqdm(total=end, initial=start, disable=not progress, unit="step", desc=desc, dynamic_ncols=True)
  # The next multiple of an interval after step s (an interval of 0 or less: every update).
  next_at = lambda interval, s: (s // interval + 1) * interval if interval > 0 else s + 1
  next_log, next_ckpt = next_at(log_every, start), next_at(checkpoint_every, start)
  next_hook = [next_at(interval, start) for interval, _ in every]
  last_saved = run.latest_step()
  try:
    with polled():  # a stop takes effect between two updates, after any checkpoint
      for new_state, new_step, metrics in updates:
        metrics = {k: v if isinstance(v, int) else float(v) for k, v in metrics.items()}
        bad = [k for k in finite if not np.isfinite(metrics[k])]
        if bad:
          terms = [k for k in metrics if k not in finite and not np.isfinite(metrics[k])] or bad
          kept = (
            f"the last good checkpoint (step {last_saved}) is kept"
            if last_saved is not None
            else "no checkpoint was saved yet"
          )
          raise UserError(
            f"the loss became non-finite at step {new_step} (term {terms[0]}); {kept} in {run.path}; "
            "lower lr or check the dataset"
          )
        bar.update(new_step - step)
        state, step = new_state, new_step
        steps_per_s = (step - rate_start) / max(time.perf_counter() - rate_t0, 1e-9)
        bar.set_postfix({k: f"{metrics[k]:.3g}" for k in postfix if k in metrics} | dict(sps=f"{steps_per_s:.0f}"))
        if step >= next_log:
          next_log = next_at(log_every, step)
          run.log(dict(step=step, wall_time=round(wall(), 1), steps_per_s=round(steps_per_s, 1), **metrics))
        for i, (interval, hook) in enumerate(every):
          if step >= next_hook[i]:
            next_hook[i] = next_at(interval, step)
            hook(state, step)
        if step >= next_ckpt:
          next_ckpt = next_at(checkpoint_every, step)
          with uninterrupted():  # a stop asked for during the write takes effect after it
            save(state, step, wall())
            last_saved = step
        check()
  except KeyboardInterrupt as e:  # SIGINT or SIGTERM (`jaxprobe.cli`): the last checkpoint is whole
    e.kept = (
      f"checkpoint {last_saved} in {run.path} is kept: continue with --resume"
      if last_saved is not None
      else f"no checkpoint was saved yet: start it again with the same command (over {run.path})"
    )
    raise
  finally:
    bar.close()
    if hasattr(updates, "close"):  # the trainer's own clean-up (its envs, its data thread) runs now
      updates.close()
  if last_saved != step:
    with uninterrupted():
      save(state, step, wall())
  return state, step
