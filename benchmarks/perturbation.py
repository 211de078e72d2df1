"""Perturbation saliency (frames/s): jaxprobe's batched scores vs the one-masked-frame-at-a-time loop (issue 8).

Greydanus et al. 2018 score every position of a grid: blur the frame under a Gaussian mask
there, x' = x (1 - M) + blur(x) M, and score 0.5 (f(x) - f(x'))^2. Their implementation runs
the agent once per mask, on a batch of one masked frame, from a Python loop. Compared, on the
same agent (random-init Q network), the same masks and the same blur:
- jaxprobe: `saliency.perturbation_scores`, jitted: all masks of all states as batched forward
  passes of `--chunk` masked states;
- the loop: per state, f(x) from one forward pass and blur(x) once (kinder than the original,
  which re-blurs per mask); then per mask the masked frame built in numpy and the same jitted
  agent called on it, its output read back as the original does.
Both score the Q-value of each state's greedy action (jaxprobe's definition; the original sums
the squared change over all outputs: the cost is the same forward pass), computed once by our
batched forward pass and given to both: a batch-of-one forward pass could pick another action
where two Q-values nearly tie, and the scores would then differ for a reason that is not speed.

Before timing, both must give the same scores. Target: jaxprobe >= 50x the loop. The script
also prints the ratio's ceiling here: the loop's time over the time the forward passes (one per
mask and one of the frame itself) would take at the machine's fp32 matrix-product speed, timed
in the same rounds (common.flop_ceiling).

  .venv/bin/python benchmarks/perturbation.py [--batches 8] [--stride 5] [--rounds 3] [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses

import common  # noqa: I001  (first: sets the XLA and OpenMP settings)
import jax
import numpy as np
import search_setup

from jaxprobe import saliency

TARGET = 50.0  # jaxprobe >= 50x the loop


@dataclasses.dataclass(frozen=True)
class Grid:
  """The masks' grid and blur, as `saliency.perturbation_scores` takes them."""

  stride: int = 5
  sigma: float = 5.0
  blur_sigma: float = 3.0


def jax_scores(agent, grid: Grid, chunk: int):
  """`(obs, actions) -> (N, G, G)` scores of jaxprobe's batched perturbation saliency, jitted."""
  scores = jax.jit(
    lambda p, o, a: saliency.perturbation_scores(
      agent.spec, p, o, action=a, stride=grid.stride, sigma=grid.sigma, blur_sigma=grid.blur_sigma, chunk=chunk
    )
  )
  return lambda obs, actions: scores(agent.params, obs, actions)


def loop_scores(agent, grid: Grid):
  """`(obs, actions) -> (N, G, G)` scores one masked frame at a time, the agent jitted for a batch of one."""
  head = agent.spec.action_head
  forward = jax.jit(lambda p, o: agent.spec.apply(p, o)[head][0])
  blur = jax.jit(lambda o: saliency.gaussian_blur(o, grid.blur_sigma))
  masks = np.asarray(saliency.perturbation_masks(84, grid.stride, grid.sigma))

  def scores(obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
    out = np.zeros((len(obs), *masks.shape[:2]), np.float32)
    for n, (x, action) in enumerate(zip(obs, actions)):
      base = np.asarray(forward(agent.params, x[None]))[action]
      blurred = np.asarray(blur(x))
      for i in range(masks.shape[0]):
        for j in range(masks.shape[1]):
          m = masks[i, j]
          out[n, i, j] = (
            0.5 * (base - np.asarray(forward(agent.params, (x * (1 - m) + blurred * m)[None]))[action]) ** 2
          )
    return out

  return scores


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--batches", default="8", help="frames explained per call, comma-separated")
  parser.add_argument("--stride", type=int, default=5, help="mask grid spacing in pixels (5: 17 x 17 masks)")
  parser.add_argument("--chunk", type=int, default=64, help="masked states per batched forward pass (jaxprobe)")
  parser.add_argument("--tolerance", type=float, default=1e-3, help="max relative difference of the scores")
  common.add_common_args(parser, rounds=3)
  args = parser.parse_args()
  if args.quick:
    args.batches, args.stride, args.rounds = "2", 10, 1
  print(common.header())

  agent, grid = search_setup.make_agent(), Grid(stride=args.stride)
  ours_fn, loop_fn = jax_scores(agent, grid, args.chunk), loop_scores(agent, grid)
  masks = len(range(0, 84, args.stride)) ** 2  # the grid of saliency.perturbation_masks
  # The work any implementation must do: a forward pass per mask and one of the frame. (XLA's count
  # of our program would see one chunk: it counts a loop body once.)
  forward = jax.jit(lambda p, o: agent.spec.apply(p, o)).lower(agent.params, search_setup.observations(1))
  frame_flops = (masks + 1) * search_setup.compiled_flops(forward.compile())
  peak = common.MatmulPeak()
  rows = []
  for batch in common.int_list(args.batches):
    obs = search_setup.observations(batch)
    actions = search_setup.greedy_actions(agent, obs)
    run_ours = common.blocking(ours_fn, jax.device_put(obs), jax.device_put(actions))
    run_loop = common.blocking(loop_fn, obs, actions)
    (ours, seconds) = common.timed(run_ours)
    print(f"jaxprobe: first call (compile) {seconds:.1f} s; {masks} masks per frame")
    common.check_agree(f"perturbation scores, batch {batch}", np.asarray(ours), run_loop(), args.tolerance)
    times = common.time_rounds({"jaxprobe": run_ours, "loop": run_loop, "matmul peak": peak}, args.rounds, warmup=1)
    row = common.Row(
      f"perturbation scores, {masks} masks/frame",
      batch,
      f"jaxprobe (jit, chunk {args.chunk})",
      times["jaxprobe"],
      "loop, 1 masked frame per call",
      times["loop"],
      batch,
      "frames",
    )
    rows += [
      row,
      *common.flop_ceiling(
        row, batch * frame_flops, peak.rate(args.rounds), TARGET, f"{masks + 1} forward passes a frame"
      ),
    ]
  common.finish(
    "perturbation", f"Perturbation saliency (target >= {TARGET:g}x the one-mask-at-a-time loop)", rows, args
  )


if __name__ == "__main__":
  main()
