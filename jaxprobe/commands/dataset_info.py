"""`jaxprobe dataset info`: what a dataset holds, in numbers and one picture.

jaxprobe dataset info data/seaquest
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from jaxprobe.collection.dataset import Dataset, draw_rows, open_dataset, summary
from jaxprobe.commands import flags
from jaxprobe.files import check_out_file, save_png
from jaxprobe.report.images import grid

NAME = ("dataset", "info")
WRITES = ("dataset", "sheet")  # the contact sheet is written into it by default
HELP = "print a dataset's manifest, action histogram and game scores, and write a contact sheet of random states"
DESCRIPTION = None
GROUP_HELP = "inspect and join datasets"


def add_arguments(p: argparse.ArgumentParser) -> None:
  """The subcommand's flags."""
  p.add_argument("dataset", help="dataset directory")
  p.add_argument("--sheet", default=None, help="contact sheet PNG path (default: DATASET/contact_sheet.png)")
  flags.from_signature(p, "--num", contact_sheet, "num", "states on the contact sheet")
  flags.seed(p, "which random states", contact_sheet)
  flags.no_verify(p)


def contact_sheet(dataset: Dataset, num: int = 12, seed: int = 0) -> np.ndarray:
  """Random states: the newest colour frame beside the agent's grayscale view of it, 2x size."""
  idx = draw_rows(len(dataset), num, seed)
  tiles, captions = [], []
  up = lambda a: np.kron(a, np.ones((2, 2, 1), np.uint8))
  for i in idx:
    colour = np.asarray(dataset["colour"][i])[..., -3:]
    gray = np.repeat(np.asarray(dataset["gray"][i])[-1][..., None], 3, -1)
    tiles.append(np.concatenate([up(colour), up(gray)], axis=1))
    captions.append(f"#{i} ep {int(dataset['episodes'][i])} a={int(dataset['actions'][i])}")
  return grid(tiles, captions, cols=4)


def run(args: argparse.Namespace) -> None:
  """Runs the subcommand."""
  dataset = open_dataset(args.dataset, verify=not args.no_verify)
  sheet = check_out_file(args.sheet or dataset.path / "contact_sheet.png", "--sheet")
  info = summary(dataset)
  scores = info.pop("game_scores")
  print(json.dumps(info, indent=2))
  print(f"game scores: {', '.join(f'{s:.0f}' for s in scores) or 'no game finished'}")
  save_png(sheet, contact_sheet(dataset, args.num, args.seed))
  print(f"contact sheet: {sheet}")
