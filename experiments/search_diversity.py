"""How different are the states a search finds, and how extreme? Issue 24's measure, per target and setting.

    python experiments/search_diversity.py --agent jaxprobe/assets/agents/pong \
      --generator jaxprobe/assets/generators/pong --dataset data/pong10k \
      --targets T- T+- S- S+ action:2 --num 256 --settings "paper:diversity=0,prior=normal" "default:"

Each setting is `name:field=value,...` over `ProbeConfig` fields (`prior=normal`: the paper's
N(0, I) prior; `diversity=0`: no repulsion between rows). Per target and setting it prints and
writes to --out: the spread of the found states against real states', the median target value
(the target's energy of the agent's outputs, without the prior or diversity terms) against the
5th percentile of the same value over --real real states, the share of found states whose
greedy action is the target's, objects per frame, and the novelty (share of pixels differing
from the nearest real state) against real states' novelty to their nearest other real state.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import jax
import numpy as np

from jaxprobe.agents.checkpoint import load_agent
from jaxprobe.collection import objects
from jaxprobe.collection.dataset import draw_rows, open_dataset
from jaxprobe.commands.probe import safe_name
from jaxprobe.evaluation.novelty import novelty, spread
from jaxprobe.files import save_png
from jaxprobe.generator.spec import load_generator
from jaxprobe.report.images import grid
from jaxprobe.search.spaces import ProbeConfig, probe, recorded_energies
from jaxprobe.search.targets import get_target


def save_sheet(path: Path, r, values: np.ndarray, modes: dict, seed: int, count: int = 12) -> None:
  """Newest frames (2x) of each mode's representative, then random other found states, captioned."""
  reps = list(modes["representatives"])
  others = np.random.default_rng(seed).permutation([i for i in range(len(r.gray)) if i not in reps])
  rows = (reps + others.tolist())[:count]
  tiles = [np.kron(r.colour[i, ..., -3:], np.ones((2, 2, 1), np.uint8)) for i in rows]
  captions = [
    (f"mode {reps.index(i) + 1} " if i in reps else "") + f"#{i} value {values[i]:.2f} a={r.greedy[i]}" for i in rows
  ]
  path.parent.mkdir(parents=True, exist_ok=True)
  save_png(path, grid(tiles, captions, cols=6))


def parse_setting(text: str) -> tuple[str, dict]:
  """'name:field=value,...' -> (name, {field: value})."""
  name, _, fields = text.partition(":")
  pairs = dict(kv.split("=", 1) for kv in fields.split(",") if kv)
  return name, pairs


def main() -> None:
  """Runs every target under every setting and prints one line each."""
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--agent", required=True)
  p.add_argument("--generator", required=True)
  p.add_argument("--dataset", required=True, help="real states of the agent's game (its generator's training data)")
  p.add_argument("--targets", nargs="+", default=["T-", "T+-", "S-", "S+", "action:2"])
  p.add_argument("--settings", nargs="+", default=["paper:diversity=0,prior=normal", "default:"])
  p.add_argument("--num", type=int, default=256)
  p.add_argument("--steps", type=int, default=200)
  p.add_argument("--real", type=int, default=2000, help="real states to compare with")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--out", default=None, help="JSON file for every number")
  p.add_argument(
    "--images",
    default=None,
    help="folder for one sheet per target and setting: each mode's representative, then random found states",
  )
  p.add_argument(
    "--states", default=None, help="folder for each target and setting's found states, energies and values (.npz)"
  )
  args = p.parse_args()

  agent = load_agent(args.agent)
  generator = load_generator(args.generator)
  dataset = open_dataset(args.dataset)
  rows = draw_rows(len(dataset), args.real, args.seed)
  real_colour, real_gray = np.asarray(dataset["colour"][rows]), np.asarray(dataset["gray"][rows])
  bg = objects.background(real_colour)
  # Real states' novelty: each one against its nearest *other* real state (itself excluded).
  half = len(rows) // 2
  real_novelty = novelty(real_gray[:half], real_gray[half:]).fraction_different
  real = dict(
    spread=spread(real_gray),
    objects=objects.describe(real_colour, bg),
    novelty_p5_p95=[float(np.percentile(real_novelty, 5)), float(np.percentile(real_novelty, 95))],
  )
  print(
    f"real states ({len(rows)}): spread {real['spread']:.2e}, objects/frame "
    f"{real['objects']['objects_per_frame']:.2f}, novelty to the nearest other real state "
    f"{100 * real['novelty_p5_p95'][0]:.2f}-{100 * real['novelty_p5_p95'][1]:.2f}% (5th-95th percentile)"
  )
  results = dict(real=real, args=vars(args), targets={})
  print(
    f"{'target':9} {'setting':10} {'spread':>8} {'of real':>7} {'median value':>12} {'real p5':>8} "
    f"{'target action':>13} {'objects':>7} {'novelty':>7} {'modes (shares)':>22} {'seconds':>7}"
  )
  for name in args.targets:
    target = get_target(name, agent.spec.kind, agent.spec.num_actions)
    real_values = recorded_energies(agent, target, dataset)[rows]
    for setting in args.settings:
      label, fields = parse_setting(setting)
      config = ProbeConfig(num=args.num, steps=args.steps, seed=args.seed)
      config = dataclasses.replace(config, **{k: type(getattr(config, k))(v) for k, v in fields.items()})
      t = time.perf_counter()
      (r,) = probe(agent, generator, [name], config, progress=False, dataset=dataset)
      values = np.asarray(jax.vmap(target.energy)(r.outputs))
      found = dict(
        spread=spread(r.gray),
        median_value=float(np.median(values)),
        real_value_p5=float(np.percentile(real_values, 5)),
        greedy_counts=np.bincount(r.greedy, minlength=agent.spec.num_actions).tolist(),
        objects=objects.describe(r.colour, bg),
        novelty_median=float(np.median(novelty(r.gray, real_gray).fraction_different)),
        modes=r.modes.summary(),  # on the agent's features, as `probe` groups them
        seconds=time.perf_counter() - t,
      )
      results["targets"].setdefault(name, {})[label] = found
      if args.states:  # to study the modes again without searching again
        Path(args.states).mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
          Path(args.states) / f"{safe_name(name)}_{label}.npz", gray=r.gray, energy=r.energy_end, values=values
        )
      if args.images:
        save_sheet(Path(args.images) / f"{safe_name(name)}_{label}.png", r, values, found["modes"], args.seed)
      action = int(name.split(":")[1]) if name.startswith("action:") else None
      share = "" if action is None else f"{100 * found['greedy_counts'][action] / args.num:.0f}%"
      shares = "/".join(f"{100 * x:.0f}" for x in found["modes"]["share"])
      print(
        f"{name:9} {label:10} {found['spread']:8.2e} {100 * found['spread'] / real['spread']:6.0f}% "
        f"{found['median_value']:12.3f} {found['real_value_p5']:8.3f} {share:>13} "
        f"{found['objects']['objects_per_frame']:7.2f} {100 * found['novelty_median']:6.2f}% "
        f"{found['modes']['modes']:>3} ({shares:>16}) {found['seconds']:7.0f}",
        flush=True,
      )
  if args.out:
    with open(args.out, "w") as f:
      json.dump(results, f, indent=1)


if __name__ == "__main__":
  main()
