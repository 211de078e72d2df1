"""Checks of the object measure (collection.objects) on a dataset that holds RAM.

1. The RAM-to-screen offsets of the game's named objects (`NAMED_OBJECTS`): per object, the
   measured objects of each state's newest frame within twice its window of where the constants
   put it; the offset that puts the centre on their centroid (median over states); how far the
   centroids lie from the centre the constants give (percentiles, 84 x 84 pixels).
2. Baselines: the measure for "reconstructions" that draw nothing, the median frame and a flat
   mid-grey image, so a generator's numbers can be read against them.

  python experiments/object_measure.py data/pong_heldout
"""

import dataclasses
import sys

import numpy as np
from scipy import ndimage

from jaxprobe.collection import objects
from jaxprobe.collection.dataset import open_dataset
from jaxprobe.envs import FRAME_SIZE


def main(path: str) -> None:
  """Prints, per named object of the dataset's game, the fitted offsets and the distances."""
  dataset = open_dataset(path)
  if "ram" not in dataset.arrays:
    sys.exit(f"{path} holds no RAM; collect it again")
  game = dataset.manifest["env_id"]
  colour, ram = np.asarray(dataset["colour"]), np.asarray(dataset["ram"]).astype(np.float64)
  bg = objects.background(colour)
  labels, _ = objects.label_objects(objects.object_pixels(colour[..., -3:], bg))
  print(f"{game}, {len(colour)} states of {path}")
  for obj in objects.NAMED_OBJECTS[game]:
    wide = dataclasses.replace(obj, half_rows=2 * obj.half_rows, half_cols=2 * obj.half_cols)
    rows, cols = wide.centre(ram)
    found_rows, found_cols, states = [], [], []
    for i in range(len(colour)):
      window = labels[i, objects.window_slice(rows[i], wide.half_rows), objects.window_slice(cols[i], wide.half_cols)]
      found = np.unique(window[window > 0])
      if len(found):
        r, c = ndimage.center_of_mass(np.isin(labels[i], found))
        found_rows.append(r), found_cols.append(c), states.append(i)
    states = np.array(states, np.int64)
    r, c = np.array(found_rows), np.array(found_cols)
    print(f"  {obj.name}: an object near it in {len(states)} of {len(colour)} states")
    for axis, address, offset, centroid, scale in (
      ("row", obj.row_address, obj.row_offset, r, FRAME_SIZE / 210),
      ("col", obj.col_address, obj.col_offset, c, FRAME_SIZE / 160),
    ):
      base = 0.0 if address is None else ram[states, address]
      fitted = float(np.median(centroid / scale - base))
      error = np.abs((base + offset) * scale - centroid)
      print(
        f"    {axis}: offset {offset} now, {fitted:.2f} fitted; distance of the centroid from the centre "
        f"(50/90/99%): {np.percentile(error, [50, 90, 99]).round(2).tolist()} px"
      )
  named = objects.NAMED_OBJECTS[game]
  for name, recon in (
    ("the median frame", np.tile(bg, (len(colour), 1, 1, 4))),
    ("flat grey", np.full_like(colour, 128)),
  ):
    f = objects.summarise(objects.compare(colour, recon, bg, ram=ram.astype(np.uint8), named=named))
    shares = ", ".join(f"{k} {v:.1%}" for k, v in f["named_drawn"].items())
    print(
      f"  {name} as the reconstruction: objects drawn {f['object_recall']:.1%}, precision "
      f"{f['object_precision'] or 0:.1%}; {shares}"
    )


if __name__ == "__main__":
  main(*sys.argv[1:])
