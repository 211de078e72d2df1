"""Fits the RAM-to-screen offsets of a game's named objects (collection.objects.NAMED_OBJECTS).

For each named object, on a dataset that holds RAM: the measured objects of each state's newest
frame within twice the object's window of where the current constants put it; the offset that puts
the window's centre on their centroid (median over states); and how far the centroids lie from the
centre the current constants give (percentiles, in 84 x 84 pixels) and how often an object is found.

  python experiments/ram_positions.py data/pong_heldout
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
      r0, c0 = max(rows[i] - wide.half_rows, 0), max(cols[i] - wide.half_cols, 0)
      window = labels[i, r0 : rows[i] + wide.half_rows + 1, c0 : cols[i] + wide.half_cols + 1]
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


if __name__ == "__main__":
  main(*sys.argv[1:])
