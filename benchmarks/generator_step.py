"""Generator training throughput (samples/s): jaxprobe's jitted train step vs eager PyTorch (issue 8).

One step of the loss of docs/generator.md, L = L_p + eta L_a + lambda KL (saliency-weighted
reconstruction, agent perception through a frozen Nature CNN, KL), then Adam, on the same
batch (uint8 colour stacks, saliency masks and the agent's outputs on the real states, as
jaxprobe's datasets store them):
- jaxprobe: `jaxprobe.generator.train.make_train_step`, jitted, `conv_impl` auto, with the
  "transpose" layout (the default, and the PyTorch peer's architecture) and the "subpixel"
  layout (the shipped Pong generators' and configs/generator_gpu.yaml's);
- PyTorch eager: the same loss over torch_models.TorchGenerator (`ConvTranspose2d` decoder)
  with the weights of our "transpose" generator, Adam.

Before timing, the two compute the same loss on the same batch (z = mean, no sampling noise,
batch norm in training mode). Target: jaxprobe >= 1.5x eager PyTorch. The script also prints the
ratio's ceiling here: PyTorch's time over the time of jaxprobe's step's FLOPs at the machine's fp32
matrix-product speed, timed in the same rounds (common.flop_ceiling).

  .venv/bin/python benchmarks/generator_step.py [--batches 16,32] [--rounds 5] [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses

import common  # noqa: I001  (first: sets the OpenMP policy before torch loads)
import jax
import jax.numpy as jnp
import numpy as np
import optax
import search_setup
import torch_models

from jaxprobe.generator import losses
from jaxprobe.generator.train import GeneratorConfig, generator_spec, init_state, make_train_step

EXTRA_VERSIONS = ("optax",)
TARGET = 1.5  # jaxprobe >= 1.5x eager PyTorch


def make_batch(batch: int, num_actions: int, seed: int = 0) -> dict[str, np.ndarray]:
  """A dataset batch as `jaxprobe.collection.loader.batches` yields it."""
  rng = np.random.default_rng(seed)
  return {
    "colour": rng.integers(0, 256, (batch, 84, 84, 12), dtype=np.uint8),
    "mask": rng.random((batch, 84, 84), dtype=np.float32),
    "q": rng.standard_normal((batch, num_actions), dtype=np.float32),
  }


def jax_step(config: GeneratorConfig, agent, batch: dict):
  """(run, compile seconds, FLOPs a step) of jaxprobe's own jitted train step; `run()` advances its state."""
  spec = generator_spec(config, agent)
  optimizer = optax.adam(config.lr)
  state = [init_state(spec, config, optimizer)]
  batch = jax.device_put(batch)
  jitted = jax.jit(make_train_step(spec.network(config.conv_impl), agent, config, optimizer))
  step, seconds = common.timed(lambda: jitted.lower(state[0], agent.params, batch).compile())

  def run():
    state[0], metrics = step(state[0], agent.params, batch)
    jax.block_until_ready(metrics)

  return run, seconds, search_setup.compiled_flops(step)


def torch_loss(gen, agent, colour_u8, mask, q_real, config: GeneratorConfig, sample: bool = True):
  """The loss of jaxprobe.generator.losses in PyTorch: each term summed per state, mean over the batch."""
  beta, eta = config.loss_weights()
  x = colour_u8.float() / 255.0
  y, mean, logvar = gen(x, sample)
  l_p = ((1.0 + beta * mask[:, None]) * (x - y) ** 2).sum((1, 2, 3))
  l_a = ((q_real - agent(gen.agent_view(y))) ** 2).sum(-1)
  kl = 0.5 * (logvar.exp() + mean**2 - 1.0 - logvar).sum(-1)
  return (l_p + eta * l_a + config.lam * kl).mean()


def torch_step(gen, agent, tensors, config: GeneratorConfig, device):
  import torch

  opt = torch.optim.Adam(gen.parameters(), config.lr)

  def run():
    opt.zero_grad(set_to_none=True)
    torch_loss(gen, agent, *tensors, config).backward()
    opt.step()
    common.torch_sync(device)

  return run


def jax_loss_without_sampling(network, variables, agent, batch, config: GeneratorConfig) -> float:
  """jaxprobe's loss terms on z = mean (make_loss samples z; the check needs both sides noise-free)."""
  beta, eta = config.loss_weights()
  real = jnp.asarray(batch["colour"], jnp.float32) / 255.0
  out, _ = network.apply(variables, real, train=True, sample=False, mutable=["batch_stats"])
  l_p = losses.reconstruction(real, out["colour"], jnp.asarray(batch["mask"]), beta)
  l_a = losses.perception(jnp.asarray(batch["q"]), agent.spec.apply(agent.params, out["agent_view"])["q"])
  kl = losses.kl_to_standard_normal(out["mean"], out["logvar"])
  return float(losses.total(l_p, l_a, kl, eta, config.lam))


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--batches", default="16,32", help="batch sizes, comma-separated (the paper's is 16)")
  parser.add_argument("--layouts", default="subpixel,transpose", help="jaxprobe decoder layouts to time")
  parser.add_argument("--tolerance", type=float, default=1e-3)
  common.add_common_args(parser, rounds=5)
  args = parser.parse_args()
  if args.quick:
    args.batches, args.rounds, args.layouts = "2", 1, "transpose"
  torch, device = common.setup_torch(args.torch_threads)
  print(common.header(EXTRA_VERSIONS, device))
  agent = search_setup.make_agent()
  num_actions = agent.spec.num_actions
  configs = {layout: GeneratorConfig(upsample=layout) for layout in args.layouts.split(",")}
  peak = common.MatmulPeak()

  rows = []
  for b in common.int_list(args.batches):
    batch = make_batch(b, num_actions)
    variants, flops = {}, {}
    for layout, config in configs.items():
      name = f"jaxprobe {layout}"
      variants[name], seconds, flops[name] = jax_step(config, agent, batch)
      print(f"{name}: compiled in {seconds:.1f} s")
    # The peer starts from the weights our transpose-layout generator starts from.
    config = dataclasses.replace(configs.get("transpose", GeneratorConfig()), upsample="transpose")
    spec = generator_spec(config, agent)
    start = init_state(spec, config, optax.adam(config.lr))
    variables = {"params": start.params, "batch_stats": start.batch_stats}
    gen = torch_models.generator_from_flax(variables).to(device).train()
    t_agent = torch_models.nature_from_flax(agent.params, num_actions).to(device).requires_grad_(False)
    tensors = (
      torch.from_numpy(batch["colour"].transpose(0, 3, 1, 2).copy()).to(device),
      torch.from_numpy(batch["mask"]).to(device),
      torch.from_numpy(batch["q"]).to(device),
    )
    ours_loss = jax_loss_without_sampling(spec.network(), variables, agent, batch, config)
    with torch.no_grad():
      theirs = float(torch_loss(gen, t_agent, *tensors, config, sample=False))
    common.check_agree(
      f"loss on z = mean, batch {b} (jaxprobe {ours_loss:.6g}, PyTorch {theirs:.6g})", ours_loss, theirs, args.tolerance
    )
    variants["torch eager"] = torch_step(gen, t_agent, tensors, config, device)
    variants["matmul peak"] = peak
    times = common.time_rounds(variants, args.rounds)
    for name in flops:
      row = common.Row(
        "generator training step", b, name, times[name], "torch eager", times["torch eager"], b, "samples"
      )
      rows += [row, *common.flop_ceiling(row, flops[name], peak.rate(args.rounds), TARGET, f"{name}'s FLOPs")]
  common.finish(
    "generator_step",
    f"Generator training step (target >= {TARGET:g}x eager PyTorch)",
    rows,
    args,
    EXTRA_VERSIONS,
    device,
  )


if __name__ == "__main__":
  main()
