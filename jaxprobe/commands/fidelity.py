"""`jaxprobe fidelity`: how much of what the agent reads survives the generator, state by state.

jaxprobe fidelity --agent AGENT --generator GEN --dataset data/heldout --states 1000
"""

from __future__ import annotations

import argparse

from jaxprobe.agents.checkpoint import load_agent
from jaxprobe.collection.dataset import open_dataset
from jaxprobe.commands import flags
from jaxprobe.files import check_out_file, write_json
from jaxprobe.generator.reconstruction import fidelity
from jaxprobe.generator.spec import load_generator

NAME = "fidelity"
WRITES = ("json",)
HELP = "how much of what the agent reads survives the generator, on real states"
DESCRIPTION = (
  "On --states states of a dataset of the agent's game: how often the agent's greedy action on G(E(x)) "
  "equals its action on x, the distance of its outputs (L_a), and the reconstruction error on salient "
  "pixels and elsewhere. Finer than goggles' score."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
  """The subcommand's flags."""
  flags.agent(p)
  flags.generator(p)
  p.add_argument("--dataset", required=True, help="dataset of the agent's game; held-out states are the fair test")
  flags.from_signature(p, "--states", fidelity, "num", "states drawn from the dataset")
  flags.seed(p, "which states", fidelity)
  flags.json_out(p, "the numbers")
  flags.no_verify(p)


def run(args: argparse.Namespace) -> None:
  """Runs the subcommand."""
  if args.json:
    check_out_file(args.json, "--json")
  f = fidelity(
    load_agent(args.agent, verify=not args.no_verify),
    load_generator(args.generator, verify=not args.no_verify),
    open_dataset(args.dataset, verify=not args.no_verify),
    num=args.states,
    seed=args.seed,
  )
  print(
    f"on {f['states']} states: same greedy action {f['action_agreement']:.1%}, L_a {f['L_a']:.4g} (centred "
    f"{f['L_a_centred']:.4g}), squared "
    f"error per colour value {f['mse_salient']:.2e} on salient pixels, {f['mse_rest']:.2e} elsewhere"
  )
  print(
    f"for reference, the agent keeps its action on the real state moved 1 px in "
    f"{f['action_agreement_shifted_1px']:.1%}, and with noise as large as the reconstruction's error in "
    f"{f['action_agreement_noise']:.1%}"
  )
  if f["action_agreement_stable"] is not None:
    print(
      f"on the {f['action_agreement_shifted_1px']:.1%} of states whose action survives the 1 px move, the "
      f"reconstruction keeps it in {f['action_agreement_stable']:.1%}"
    )
  scaled = ", ".join(f"x{s} {v:.1%}" for s, v in f["action_agreement_error_scaled"].items())
  print(f"with the reconstruction's error scaled down at its shape, the agent keeps its action: {scaled}")
  percent = lambda x: "n/a" if x is None else f"{x:.1%}"
  sizes = ", ".join(f"{percent(v)} of {f['objects_by_size'][k]} of {k} px" for k, v in f["recall_by_size"].items())
  print(
    f"objects drawn: {percent(f['object_recall'])} ({sizes}); states with every object drawn "
    f"{percent(f['states_all_drawn'])}; precision {percent(f['object_precision'])}"
  )
  if f["named_drawn"]:
    print(
      "named objects: "
      + "; ".join(
        f"{name} drawn in {percent(share)} of the {f['named_present'][name]} states with one"
        for name, share in f["named_drawn"].items()
      )
    )
  if args.json:
    write_json(args.json, f)
