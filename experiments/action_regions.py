"""Which part of a reconstruction moves the agent's greedy action? Real pixels pasted back, region by region.

    python experiments/action_regions.py --agent jaxprobe/assets/agents/seaquest-dqn \
      --generator jaxprobe/assets/generators/seaquest-dqn --dataset data/seaquest-dqn_heldout10k

On 1,000 states of the dataset (`jaxprobe fidelity`'s draw for --seed), in the agent's view (4 x
84 x 84 gray, rows from the top):
- how often the agent keeps its action on the real state when one band of rows is swapped with
  another real state's (does it read the score, the lives, the oxygen bar?);
- how often it keeps its action on G(E(x)) with the real pixels of one band, or of one kind,
  pasted back: the band it reads wrongly is the one whose real pixels bring the action back;
- and with every pixel within --threshold of the background set to it, on G(E(x)) and on the
  real state (does cleaning the reconstruction's faint errors help, and does the agent read
  faint pixels?).
Object pixels here are those of the agent's view more than --threshold gray levels from the
newest frames' per-pixel median. The reconstruction's view is rounded to whole gray levels, as
a frame is, so its share can differ from `jaxprobe fidelity`'s by a few states in a thousand.
Bands are Seaquest's; pass --bands for another game.
"""

from __future__ import annotations

import argparse

import jax
import numpy as np

from jaxprobe.agents.checkpoint import load_agent
from jaxprobe.collection.dataset import draw_rows, open_dataset
from jaxprobe.evaluation.samples import reconstruct
from jaxprobe.generator.spec import load_generator

SEAQUEST_BANDS = "score:0-8,lives:8-13,water:13-67,oxygen:67-75,divers:75-84"


def parse_bands(text: str) -> dict[str, slice]:
  """'name:start-stop,...' -> {name: slice(start, stop)} of rows."""
  bands = {}
  for part in text.split(","):
    name, rows = part.split(":")
    start, stop = (int(r) for r in rows.split("-"))
    bands[name] = slice(start, stop)
  return bands


def main() -> None:
  """Prints the shares of actions kept."""
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--agent", required=True)
  p.add_argument("--generator", required=True)
  p.add_argument("--dataset", required=True)
  p.add_argument("--states", type=int, default=1000)
  p.add_argument("--seed", type=int, default=7)
  p.add_argument("--threshold", type=float, default=10.0)
  p.add_argument("--bands", default=SEAQUEST_BANDS)
  args = p.parse_args()

  agent, data = load_agent(args.agent), open_dataset(args.dataset)
  idx = draw_rows(len(data), args.states, args.seed)
  gray = np.asarray(data["gray"][idx]).astype(np.float32)
  view = reconstruct(load_generator(args.generator), np.asarray(data["colour"][idx]))[1].astype(np.float32)
  act = jax.jit(lambda x: agent.spec.apply(agent.params, x)[agent.spec.action_head].argmax(-1))
  real_action = np.asarray(act(gray))
  kept = lambda x: f"{np.mean(np.asarray(act(x)) == real_action):.1%}"
  bands = parse_bands(args.bands)

  other = gray[np.random.default_rng(args.seed + 1).permutation(len(gray))]
  print(
    f"on {len(idx)} states, the agent keeps its action on the real state with one band swapped for another state's:"
  )
  for name, rows in bands.items():
    x = gray.copy()
    x[..., rows, :] = other[..., rows, :]
    print(f"  {name} (rows {rows.start}-{rows.stop - 1}): {kept(x)}")

  print(f"on G(E(x)): {kept(view)}; with the real pixels pasted back")
  for name, rows in bands.items():
    x = view.copy()
    x[..., rows, :] = gray[..., rows, :]
    print(f"  of {name}: {kept(x)}")
  background = np.median(gray[:, -1], axis=0)
  is_object = np.abs(gray - background) > args.threshold
  print(f"  of the objects ({is_object.mean():.1%} of pixels): {kept(np.where(is_object, gray, view))}")
  print(f"  of the background: {kept(np.where(is_object, view, gray))}")
  snap = lambda x: np.where(np.abs(x - background) > args.threshold, x, background)
  print(f"with the pixels near the background set to it: G(E(x)) {kept(snap(view))}, the real state {kept(snap(gray))}")


if __name__ == "__main__":
  main()
