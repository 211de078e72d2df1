"""How much the number of weakness modes depends on the directions the mixture is fitted in.

    python experiments/modes_sensitivity.py --agent jaxprobe/assets/agents/pong --states DIR --dims 8 6 4 3

DIR is `search_diversity.py --states`: each target and setting's found states (`gray`, uint8)
and energies. For each file and each number of principal directions D, the modes of
`jaxprobe.search.modes.find_modes` on the agent's features of the states, with D at most that:
the count, the shares, and how many counts the BIC could weigh (a count stops where a mixture has
as many parameters as there are states). Features are taken from the stored (rounded) frames, so
the counts at D = 8 may differ a little from the search's own, which used the unrounded ones.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import numpy as np

from jaxprobe.agents.checkpoint import load_agent
from jaxprobe.search import modes


def main() -> None:
  """One line per file and D."""
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--agent", required=True)
  p.add_argument("--states", required=True, help="folder of search_diversity.py --states")
  p.add_argument("--dims", nargs="+", type=int, default=[8, 6, 4, 3])
  p.add_argument("--out", default=None, help="JSON file for every count")
  args = p.parse_args()
  agent = load_agent(args.agent)
  features = jax.jit(lambda x: agent.spec.features(agent.params, x))
  results = {}
  for path in sorted(Path(args.states).glob("*.npz")):
    found = np.load(path)
    x = np.asarray(features(found["gray"].astype(np.float32)))
    for dims in args.dims:
      m = modes.find_modes(x, found["energy"], max_dims=dims)
      summary = m.summary()
      weighed = int(np.isfinite(m.bic).sum())
      results.setdefault(path.stem, {})[dims] = dict(summary, counts_weighed=weighed)
      print(f"{path.stem:22} D<={dims}: D={m.dims} {modes.describe(summary):24} counts 1-{weighed} weighed", flush=True)
  if args.out:
    Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
  main()
