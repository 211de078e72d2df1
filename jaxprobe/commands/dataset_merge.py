"""`jaxprobe dataset merge`: one dataset from several collections of one agent, e.g. of other seeds.

jaxprobe dataset merge data/seaquest-dqn10k data/seaquest-dqn20k_s1 --out data/seaquest-dqn30k
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jaxprobe.collection import dataset as ds
from jaxprobe.commands import flags
from jaxprobe.errors import UserError

NAME = ("dataset", "merge")
WRITES = ("out",)
HELP = "join datasets of one agent and game (collected with other seeds) into one, rows one after the other"
DESCRIPTION = (
  "The parts must come from the same agent (fingerprint) and hold the same arrays; each part's games "
  "keep episode ids of their own, and the manifest lists the parts."
)
GROUP_HELP = "inspect and join datasets"


def add_arguments(p: argparse.ArgumentParser) -> None:
  """The subcommand's flags."""
  p.add_argument("datasets", nargs="+", help="dataset directories, in the order their rows are joined")
  flags.out(p, "dataset directory to create")
  flags.no_verify(p)


def run(args: argparse.Namespace) -> None:
  """Runs the subcommand."""
  out = Path(args.out)
  if len(args.datasets) < 2:
    raise UserError("give at least two datasets to merge")
  if out.exists():
    raise UserError(f"{out} already exists; choose another --out (nothing was overwritten)")
  parts = [ds.open_dataset(path, verify=not args.no_verify) for path in args.datasets]
  frames = sum(len(p) for p in parts)
  ds.merge(
    parts,
    out,
    command=" ".join(sys.argv),
    frames=frames,
    parts=[
      dict(path=str(p.path), seed=p.manifest.get("seed"), frames=len(p), command=p.manifest.get("command"))
      for p in parts
    ],
  )
  print(f"merged {len(parts)} datasets ({frames} states) into {out}")
