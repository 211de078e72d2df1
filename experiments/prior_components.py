"""Does a latent prior of more components, or sampled nearer its centres, sample more like the game?
Issue 24's prior check per count and temperature T (each covariance scaled by T^2).

    python experiments/prior_components.py --generator jaxprobe/assets/generators/seaquest \
      --dataset data/seaquest10k --components 16 32 64 --out experiments/results/prior_components/seaquest.json

`jaxprobe fit-prior` chooses among 1, 2, 4, 8 and 16 components by held-out log density, and on
every shipped generator it chose 16 with the density still rising. Here each count is fitted
on the same states as fit-prior fits (its seed and split), scored on the same held-out fifth, and
its 1,000 decoded samples compared with 1,000 real states as `fit-prior` compares them (objects per
frame, the share of frames with an object of each size, spread). Writes nothing to the generator.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import numpy as np

from jaxprobe.collection.dataset import draw_rows, open_dataset
from jaxprobe.evaluation.samples import compare_with_real
from jaxprobe.generator import prior
from jaxprobe.generator.spec import load_generator
from jaxprobe.generator.train import encoder_means


def main() -> None:
  """One line per component count."""
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--generator", required=True)
  p.add_argument("--dataset", required=True)
  p.add_argument("--components", nargs="+", type=int, default=[16, 32, 64])
  p.add_argument(
    "--temperatures", nargs="+", type=float, default=[1.0], help="scales of every covariance's Cholesky factor"
  )
  p.add_argument("--states", type=int, default=10_000)
  p.add_argument("--samples", type=int, default=1000)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--out", default=None)
  args = p.parse_args()
  generator, dataset = load_generator(args.generator), open_dataset(args.dataset)
  rows = draw_rows(len(dataset), args.states, args.seed)
  colour, gray = np.asarray(dataset["colour"][rows]), np.asarray(dataset["gray"][rows])
  key_fit, key_samples = jax.random.split(jax.random.key(args.seed))  # as fit-prior splits them
  mean, std = generator.latent_coordinates()
  u = (encoder_means(generator.spec.network(), generator.variables, colour) - mean) / std
  results = {}
  for k in args.components:
    mixture, held_out = prior.fit_best(u, key_fit, candidates=(k,))
    tempered = {f"T={t:g}": mixture._replace(scale_tril=mixture.scale_tril * t) for t in args.temperatures}
    check = compare_with_real(generator, tempered, colour, gray, args.samples, key_samples)
    results[k] = dict(held_out_log_density=round(held_out[k], 3), check=check)
    real = check["real states"]
    for name in ["reconstructions", *tempered]:  # the reconstructions of the real states: what the decoder draws
      report(k, name, held_out[k], check[name], real)
  if args.out:
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))


def report(k: int, name: str, held_out: float, fitted: dict, real: dict) -> None:
  """One line: the samples' object statistics and spread beside real states'."""
  sizes = fitted["share_with_object_of_size"]
  print(
    f"{k:3d} components, {name}: held-out log density {held_out:8.2f}; "
    f"objects per frame {fitted['objects_per_frame']:.2f} "
    f"(real {real['objects_per_frame']:.2f}); frames with 2-6 / 7-30 / >30 px objects "
    + " / ".join(f"{100 * sizes[s]:.1f}%" for s in ("2-6", "7-30", ">30"))
    + " (real "
    + " / ".join(f"{100 * real['share_with_object_of_size'][s]:.1f}%" for s in ("2-6", "7-30", ">30"))
    + f"); spread {fitted['spread']:.2e} (real {real['spread']:.2e})",
    flush=True,
  )


if __name__ == "__main__":
  main()
