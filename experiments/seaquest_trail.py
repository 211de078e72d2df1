"""Where does a generator draw a large object the real frame does not have? Two generators side by side.

    mkdir -p /tmp/s1 && git archive 2b36469 jaxprobe/assets/generators/seaquest | tar -x -C /tmp/s1
    python experiments/seaquest_trail.py --old /tmp/s1/jaxprobe/assets/generators/seaquest \
      --new jaxprobe/assets/generators/seaquest --dataset data/seaquest10k --out /tmp/trail.png

On every 33rd of the dataset's first 10,000 states (300), the newest frame of the real state and
of both reconstructions G(E(x)): prints the share of frames holding an object of more than 30
pixels (collection.objects' measure, against the dataset's median frame), and draws, 3x, the first
six states where the old generator's frame holds one and the real frame none: real | old | new.
"""

from __future__ import annotations

import argparse

import numpy as np
from PIL import Image

from jaxprobe.collection import objects
from jaxprobe.collection.dataset import open_dataset
from jaxprobe.evaluation.samples import reconstruct
from jaxprobe.generator.spec import load_generator


def newest_frames(path: str, colour: np.ndarray) -> np.ndarray:
  """The newest frame `(N, 84, 84, 3)` uint8 of each reconstruction by the generator at `path`."""
  return reconstruct(load_generator(path), colour)[0][..., 9:12]


def has_large_object(frames: np.ndarray, bg: np.ndarray) -> np.ndarray:
  """`(N,)` bool: the frame holds an object of more than 30 pixels."""
  labels, sizes = objects.label_objects(objects.object_pixels(frames, bg))
  large = np.zeros(len(frames), bool)
  large[objects.frame_of(labels)[sizes[1:] > 30]] = True
  return large


def main() -> None:
  """Prints the shares and writes the picture."""
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--old", required=True)
  p.add_argument("--new", required=True)
  p.add_argument("--dataset", required=True)
  p.add_argument("--out", default="/tmp/trail.png")
  args = p.parse_args()
  ds = open_dataset(args.dataset, verify=False)
  colour = ds["colour"][np.arange(0, min(len(ds), 10_000), 33)[:300]]
  bg = objects.background(ds["colour"])
  frames = dict(real=colour[..., 9:12], old=newest_frames(args.old, colour), new=newest_frames(args.new, colour))
  large = {name: has_large_object(f, bg) for name, f in frames.items()}
  print(", ".join(f"{name} {flag.mean():.1%}" for name, flag in large.items()), "of frames hold a >30 px object")
  pick = np.where(large["old"] & ~large["real"])[0][:6]
  gap = np.full((84, 2, 3), 255, np.uint8)
  rows = [np.concatenate([frames["real"][i], gap, frames["old"][i], gap, frames["new"][i]], 1) for i in pick]
  img = np.concatenate(rows, 0)
  Image.fromarray(img).resize((img.shape[1] * 3, img.shape[0] * 3), Image.NEAREST).save(args.out)
  print(f"states {pick.tolist()}: real | old | new in {args.out}")


if __name__ == "__main__":
  main()
