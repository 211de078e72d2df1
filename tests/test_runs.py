"""The one training loop (`runs.drive`) and run directories, on a counter trainer: intervals,
curves begun by an earlier version, the trainer's clean-up, and a non-finite loss."""

import csv
import dataclasses
from typing import NamedTuple

import jax.numpy as jnp
import pytest

from jaxprobe.errors import UserError
from jaxprobe.runs import RunDir, drive


@dataclasses.dataclass(frozen=True)
class CounterConfig:
  total_steps: int = 10
  log_every: int = 3
  checkpoint_every: int = 4


class State(NamedTuple):
  step: jnp.ndarray


class Counter:
  """A trainer: yields (state, step, metrics) up to `end`; records whether it was closed."""

  def __init__(self, start, end, loss=lambda step: 1.0 / step):
    self.start, self.end, self.loss, self.closed = start, end, loss, False

  def __iter__(self):
    return self

  def __next__(self):
    if self.start >= self.end:
      raise StopIteration
    self.start += 1
    return State(jnp.asarray(self.start)), self.start, dict(loss=self.loss(self.start), games=self.start // 2)

  def close(self):
    self.closed = True


def rows(run):
  with open(run.curve_file, newline="") as f:
    return list(csv.DictReader(f))


def run_counter(tmp_path, config, trainer, resume=False):
  run = RunDir(tmp_path / "run", "counter", config, resume)
  saved = []
  state = State(jnp.asarray(trainer.start))
  drive(
    run,
    trainer,
    state,
    end=config.total_steps,
    log_every=config.log_every,
    checkpoint_every=config.checkpoint_every,
    save=lambda s, step, wall: saved.append(step),
    desc="counter",
    progress=False,
    finite=("loss",),
  )
  return run, saved


def test_intervals_are_multiples_and_the_last_step_is_saved(tmp_path):
  trainer = Counter(0, 10)
  run, saved = run_counter(tmp_path, CounterConfig(), trainer)
  assert [int(r["step"]) for r in rows(run)] == [3, 6, 9]
  assert saved == [4, 8, 10] and trainer.closed
  assert rows(run)[0]["games"] == "1"  # integer metrics stay integers


def test_an_interval_of_zero_means_every_update(tmp_path):
  run, saved = run_counter(tmp_path, CounterConfig(total_steps=3, log_every=0, checkpoint_every=0), Counter(0, 3))
  assert [int(r["step"]) for r in rows(run)] == [1, 2, 3] and saved == [1, 2, 3]


def test_a_curve_begun_by_an_earlier_version_keeps_its_columns(tmp_path):
  run = RunDir(tmp_path / "run", "counter", CounterConfig(), resume=False)
  run.curve_file.write_text("step,wall_time,loss,old_metric\r\n1,0.5,1.0,7\r\n")
  run.log(dict(step=2, wall_time=1.0, steps_per_s=3.0, loss=0.5, games=1))
  assert rows(run) == [
    dict(step="1", wall_time="0.5", loss="1.0", old_metric="7"),
    dict(step="2", wall_time="1.0", loss="0.5", old_metric=""),
  ]


def test_a_non_finite_loss_stops_before_that_state_is_kept(tmp_path):
  trainer = Counter(0, 10, loss=lambda step: float("nan") if step == 6 else 1.0)
  with pytest.raises(UserError, match=r"non-finite at step 6 \(term loss\); the last good checkpoint \(step 4\)"):
    run_counter(tmp_path, CounterConfig(), trainer)
  assert trainer.closed
