"""Game gauges read from pixels, so synthesized states (which have no RAM) are read like real ones.

Rollout evidence reads Seaquest's oxygen from the emulator's RAM; a state the generator
made has only pixels. In the 84x84 colour frames the oxygen meter is a white bar
(RGB 214) on dark red (G channel 57) in rows 68-69, columns 26-57, whose length is
about RAM[102] / 2 pixels (64 = full). Against RAM on real play the reading is within 2/64
of full (tests/test_report.py). The reading is the bar's mean brightness over its full-length
window, in [0, 1], so the blurry bars a generator draws get fractional readings.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Gauge(NamedTuple):
  """Where a game draws a bar gauge in the newest frame, and its empty and full levels."""

  rows: tuple[int, int]  # [start, stop) in the 84x84 frame
  cols: tuple[int, int]
  channel: int  # R, G or B of the newest frame of the colour stack
  empty: float  # channel value where the bar is absent
  full: float  # channel value of the bar


GAUGES = {"Seaquest-v5": {"oxygen": Gauge(rows=(68, 70), cols=(26, 58), channel=1, empty=57.0, full=214.0)}}
LOW = 0.25  # the rollout evidence's "low oxygen": <= 16 of 64


def read_gauge(colour: np.ndarray, gauge: Gauge) -> np.ndarray:
  """Fill level in [0, 1] of `gauge` in colour stacks (N, 84, 84, 12): uint8 [0, 255] or float [0, 1]."""
  colour = np.asarray(colour)
  scale = 255.0 if np.issubdtype(colour.dtype, np.floating) else 1.0
  window = colour[:, slice(*gauge.rows), slice(*gauge.cols), colour.shape[-1] - 3 + gauge.channel]
  level = (window.astype(np.float32) * scale - gauge.empty) / (gauge.full - gauge.empty)
  return np.clip(level, 0.0, 1.0).mean(axis=(1, 2))


def gauge_summary(colour: np.ndarray, env_id: str, low: float = LOW) -> dict:
  """Per gauge of `env_id`: mean reading and the share of states at or below `low` ({} for other games)."""
  summary = {}
  for name, gauge in GAUGES.get(env_id, {}).items():
    level = read_gauge(colour, gauge)
    summary[name] = dict(
      mean=float(level.mean()), share_low=float(np.mean(level <= low)), low=low, states=int(len(level))
    )
  return summary
