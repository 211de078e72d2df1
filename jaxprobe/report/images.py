"""Images a person reads at a glance: saliency heat maps over frames, and captioned grids."""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont


@functools.cache
def _colour_table(name: str = "inferno") -> np.ndarray:
  from matplotlib import colormaps  # imported lazily: matplotlib is slow to import

  return (colormaps[name](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)


def heatmap_overlay(frame: np.ndarray, heat: np.ndarray, scale: int = 4, strength: float = 0.8) -> np.ndarray:
  """A grayscale frame `(H, W)` uint8 with `heat` `(H, W)` in [0, 1] laid over it as colour.

  The colour's opacity follows the heat, so cold regions show the game
  untouched and hot ones glow. Upscaled by `scale` (nearest) to keep pixels crisp.
  """
  heat = np.clip(np.asarray(heat, np.float32), 0, 1)
  gray = np.repeat(np.asarray(frame, np.float32)[..., None], 3, axis=-1)
  colour = _colour_table()[(heat * 255).astype(np.uint8)].astype(np.float32)
  alpha = (strength * np.sqrt(heat))[..., None]
  out = ((1 - alpha) * gray * 0.8 + alpha * colour).clip(0, 255).astype(np.uint8)
  return np.kron(out, np.ones((scale, scale, 1), np.uint8)) if scale > 1 else out


def _font(size: int):
  try:
    return ImageFont.load_default(size=size)
  except TypeError:  # Pillow < 10.1 has one fixed-size font
    return ImageFont.load_default()


def grid(
  images: Sequence[np.ndarray],
  captions: Sequence[str] | None = None,
  cols: int = 4,
  pad: int = 6,
  caption_height: int = 18,
) -> np.ndarray:
  """Tiles equally sized `(H, W, 3)` uint8 images in rows of `cols`, each with a caption under it."""
  if not images:
    raise ValueError("grid needs at least one image")
  h, w = images[0].shape[:2]
  rows = -(-len(images) // cols)
  cell_h = h + (caption_height if captions else 0)
  canvas = Image.new("RGB", (cols * (w + pad) + pad, rows * (cell_h + pad) + pad), (24, 24, 28))
  draw = ImageDraw.Draw(canvas)
  font = _font(max(10, caption_height - 5))
  for i, img in enumerate(images):
    x, y = pad + (i % cols) * (w + pad), pad + (i // cols) * (cell_h + pad)
    canvas.paste(Image.fromarray(np.asarray(img, np.uint8)), (x, y))
    if captions:
      draw.text((x + 2, y + h + 2), captions[i], fill=(230, 230, 230), font=font)
  return np.asarray(canvas)


def value_bars(values: np.ndarray, width: int, height: int = 40, highlight: int | None = None) -> np.ndarray:
  """A tiny bar chart of one state's action values `(A,)`: bars from the lowest value up, the greedy one in orange."""
  values = np.asarray(values, np.float64)
  canvas = Image.new("RGB", (width, height), (24, 24, 28))
  draw = ImageDraw.Draw(canvas)
  lo, hi = values.min(), values.max()
  span = hi - lo if hi > lo else 1.0
  bar_w = width / len(values)
  for a, v in enumerate(values):
    h = 3 + (height - 6) * (v - lo) / span
    colour = (255, 150, 40) if a == highlight else (120, 160, 220)
    draw.rectangle([a * bar_w + 1, height - h, (a + 1) * bar_w - 2, height - 1], fill=colour)
  return np.asarray(canvas)
