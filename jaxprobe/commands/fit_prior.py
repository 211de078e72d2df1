"""`jaxprobe fit-prior`: a latent prior fitted to a generator's training states and stored with it.

jaxprobe fit-prior --generator jaxprobe/assets/generators/pong --dataset data/pong10k
"""

from __future__ import annotations

import argparse

from jaxprobe.collection.dataset import open_dataset
from jaxprobe.commands import flags
from jaxprobe.evaluation.samples import fit_prior
from jaxprobe.generator.spec import load_generator, save_generator

NAME = "fit-prior"
WRITES = ("generator",)  # its prior is written into it; held for the whole command (cli.main)
HELP = "fit the latent prior the search starts from and stays in, and store it with the generator"
DESCRIPTION = (
  "Fit a Gaussian mixture (full covariances, the number of components chosen on held-out states) to "
  "the encoder's latents of the generator's training states, check that its samples look like the "
  "game (objects per frame, frames with a small object, spread, against real states and N(0, I)), "
  "and save the generator again with it."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
  """The subcommand's flags."""
  flags.generator(p)
  p.add_argument("--dataset", required=True, help="the generator's training data (or more states of its agent)")
  flags.from_signature(p, "--states", fit_prior, "states", "states the prior is fitted to")
  flags.from_signature(p, "--samples", fit_prior, "samples", "samples decoded for the check")
  flags.seed(p, "which states, the fit's start and the samples", fit_prior)
  flags.no_verify(p)


def run(args: argparse.Namespace) -> None:
  """Runs the subcommand."""
  generator = load_generator(args.generator, verify=not args.no_verify)
  fitted, record = fit_prior(
    generator, open_dataset(args.dataset, verify=not args.no_verify), args.states, args.samples, args.seed
  )
  scores = ", ".join(f"{k}: {v:.1f}" for k, v in record["held_out_log_density"].items())
  print(f"fitted {record['components']} components to {record['states']} states (held-out log density {scores})")
  print(f"{'':15s} {'objects/frame':>13s} {'2-6 px':>7s} {'7-30 px':>8s} {'>30 px':>7s} {'spread':>8s}")
  for name, s in record["check"].items():
    share = s["share_with_object_of_size"]
    sizes = f"{share['2-6']:7.1%} {share['7-30']:8.1%} {share['>30']:7.1%}"
    print(f"{name:15s} {s['objects_per_frame']:13.2f} {sizes} {s['spread']:8.2e}")
  save_generator(args.generator, fitted)
  print(f"saved the prior with the generator in {args.generator}")
