"""Carry a dataset to a machine without the emulator: pack it small here, rebuild it there.

A lent accelerator takes at most 64 MiB of working tree, and a 10,000-state dataset is about
1.2 GB as `.npy` files. Atari frames compress extremely well (`pack` of 10,000 Pong states:
1.18 MiB with LZMA), so `pack` writes the arrays the agent cannot recompute (colour, gray,
actions, rewards, dones, episodes, steps, and ram where the dataset has it) as `.npy.xz` with the
manifest, and `unpack` rebuilds the dataset: the agent's outputs and the saliency masks are recomputed there with
the collector's own function (`collection.recorder.make_explainer`), and the manifest gets
the new checksums (`collection.dataset.finalise`).

    python experiments/device_data.py pack data/pong10k carry/pong10k
    python experiments/device_data.py unpack carry/pong10k data/pong10k --agent jaxprobe/assets/agents/pong
"""

from __future__ import annotations

import argparse
import json
import lzma
import shutil
from pathlib import Path

import jax
import numpy as np

from jaxprobe.agents.checkpoint import load_agent
from jaxprobe.collection import dataset as ds
from jaxprobe.collection.recorder import SALIENCY_BATCH, array_specs, make_explainer
from jaxprobe.parallel import map_in_batches

CARRIED = ("colour", "gray", "ram", "actions", "rewards", "dones", "episodes", "steps")


def pack(dataset_path: str, out: str) -> None:
  """Writes the carried arrays of a dataset as `.npy.xz` and its manifest into folder `out`."""
  dataset = ds.open_dataset(dataset_path)
  out = Path(out)
  out.mkdir(parents=True, exist_ok=True)
  manifest = {k: v for k, v in dataset.manifest.items() if k not in ("arrays", "count", "format_version")}
  (out / "manifest.json").write_text(json.dumps(dict(manifest, count=len(dataset)), indent=2))
  for name in (n for n in CARRIED if n in dataset.arrays):  # older datasets have no ram
    with lzma.open(out / f"{name}.npy.xz", "wb", preset=6) as f:
      np.save(f, np.asarray(dataset[name]))
  size = sum(f.stat().st_size for f in out.iterdir())
  print(f"packed {len(dataset)} states of {dataset_path} into {out}: {size / 2**20:.2f} MiB")


def unpack(packed: str, out: str, agent_path: str) -> None:
  """Rebuilds the dataset `out` from a packed folder, with the agent's outputs and masks recomputed."""
  packed, out = Path(packed), Path(out)
  manifest = json.loads((packed / "manifest.json").read_text())
  count = manifest.pop("count")
  agent = load_agent(agent_path)
  partial = ds.partial_path(out)
  shutil.rmtree(partial, ignore_errors=True)
  carried = [n for n in CARRIED if (packed / f"{n}.npy.xz").exists()]
  specs = {k: v for k, v in array_specs(agent, count).items() if k in carried or k not in CARRIED}
  arrays = ds.create_arrays(partial, specs)
  for name in carried:
    with lzma.open(packed / f"{name}.npy.xz", "rb") as f:
      arrays[name][:] = np.load(f)
  explain = make_explainer(agent, manifest["saliency"]["blur_size"])
  outputs, masks = map_in_batches(lambda obs: explain(agent.params, obs), arrays["gray"], batch_size=SALIENCY_BATCH)
  arrays["mask"][:] = masks
  for name, values in outputs.items():
    arrays[name][:] = values
  for a in arrays.values():
    a.flush()
  del arrays
  ds.finalise(partial, out, manifest, count)
  print(f"unpacked {count} states into {out} (outputs and masks recomputed on {jax.default_backend()})")


def main() -> None:
  """The command line: pack or unpack."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  sub = parser.add_subparsers(dest="action", required=True)
  p = sub.add_parser("pack")
  p.add_argument("dataset")
  p.add_argument("out")
  u = sub.add_parser("unpack")
  u.add_argument("packed")
  u.add_argument("out")
  u.add_argument("--agent", required=True)
  args = parser.parse_args()
  if args.action == "pack":
    pack(args.dataset, args.out)
  else:
    unpack(args.packed, args.out, args.agent)


if __name__ == "__main__":
  main()
