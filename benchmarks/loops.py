"""Loop drivers on this backend: a Python loop of one jitted step against one fused `lax.scan`.

The measurement behind `loop: auto` (`jaxprobe.parallel.resolve_loop`, docs/cpu.md, section
'Convolution gradients inside loops'): the same steps driven both ways, compiled apart from
the timing, checked equal first.
- ppo update: `jaxprobe.agents.ppo.make_update` with loop "python" and "scan": update_epochs x
  num_minibatches Adam steps of the Nature CNN's parameter gradient (minibatch --minibatch);
- latent search: jaxprobe's search step (search_setup.py) for --steps steps of --rows rows,
  random generator and agent.
The ratio column is scan's time over the Python loop's: above 1, the Python loop is faster.

  .venv/bin/python benchmarks/loops.py [--rounds 3] [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses

import common  # noqa: I001  (first: sets the XLA and OpenMP settings)
import numpy as np
import search_setup
from jax.flatten_util import ravel_pytree

from jaxprobe.agents import ppo


def ppo_variants(minibatch: int, minibatches: int, epochs: int):
  config = ppo.PPOConfig(num_minibatches=minibatches, update_epochs=epochs, anneal_lr=False)
  spec = ppo.agent_spec(config, 6)
  optimizer = ppo.make_optimizer(config, 1)
  state = ppo.init_state(spec, config, optimizer)
  n = minibatch * minibatches
  rng = np.random.default_rng(0)
  batch = ppo.Batch(
    rng.integers(0, 256, (n, 4, 84, 84), dtype=np.uint8),
    rng.integers(0, 6, n).astype(np.int32),
    np.full(n, np.log(1 / 6), np.float32),
    rng.normal(size=n).astype(np.float32),
    rng.normal(size=n).astype(np.float32),
  )
  variants = {}
  for loop in ("python", "scan"):
    update = ppo.make_update(spec, dataclasses.replace(config, loop=loop), optimizer)
    variants[loop] = common.blocking(lambda u=update: ravel_pytree(u(state, batch)[0].params)[0])
  return variants, epochs * minibatches


def search_variants(rows: int, steps: int):
  agent, generator = search_setup.make_agent(), search_setup.make_generator()
  v0 = search_setup.start_latents(rows)
  variants = {}
  for loop in ("python", "scan"):
    config = search_setup.probe_config(loop=loop)
    runner = search_setup.search_runner(search_setup.energy_fn(agent, generator, "T+-", config), v0, steps, config)
    print(f"latent search: compiled the {loop} driver in {runner.compile_s:.1f} s")
    # The scan driver returns (state, curve), the Python loop the state.
    variants[loop] = lambda r=runner, scan=loop == "scan": (r.run()[0] if scan else r.run()).v
  return variants, steps * rows


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--minibatch", type=int, default=256, help="PPO minibatch (CleanRL's Atari: 256)")
  parser.add_argument("--rows", type=int, default=256, help="latent search rows")
  parser.add_argument("--steps", type=int, default=10, help="latent search steps")
  parser.add_argument("--tolerance", type=float, default=1e-3, help="max relative difference of the two drivers")
  common.add_common_args(parser, rounds=3)
  args = parser.parse_args()
  if args.quick:
    args.minibatch, args.rows, args.steps, args.rounds = 8, 8, 2, 1
  rows = []
  cases = (
    ("ppo update", lambda: ppo_variants(args.minibatch, 2, 2), "minibatch steps", args.minibatch),
    ("latent search", lambda: search_variants(args.rows, args.steps), "latent steps", args.rows),
  )
  for case, make, unit, batch in cases:
    variants, items = make()
    common.check_agree(f"{case}: python loop vs scan", variants["python"](), variants["scan"](), args.tolerance)
    times = common.time_rounds(variants, args.rounds, warmup=1)
    rows.append(common.Row(case, batch, "python loop", times["python"], "lax.scan", times["scan"], items, unit))
  common.finish(
    "loops", "Loop drivers: a Python loop of one jitted step vs one lax.scan (ratio: scan time / loop time)", rows, args
  )


if __name__ == "__main__":
  main()
