"""Convolution gradients on this machine: jaxprobe.conv ("fast") vs XLA's own vs PyTorch eager.

Three groups, each timed in interleaved rounds (every variant once per round, so a burst
of other work on the machine hits all variants alike), reporting the median round:
- layers: forward, weight gradient, input gradient of every convolution shape we use;
- nature: the Nature CNN parameter gradient (batch 256 is the PPO minibatch, and 32);
- generator: one generator training step (encoder, decoder, crop, grayscale, perception
  loss through a frozen Nature CNN, Adam), batch 16 and 32.

Prints a table and appends its rows to benchmarks/results.csv.

  nice -n -10 .venv/bin/python benchmarks/conv_grad.py [--groups layers,nature,generator] [--rounds 7]
"""
from __future__ import annotations

import argparse
import csv
import datetime
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

# Variants run interleaved: idle PyTorch OpenMP workers must sleep, not spin on the cores
# that the JAX variant timed next needs.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import flax  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from flax import linen as nn  # noqa: E402

from jaxprobe.agents.networks import QNetwork  # noqa: E402
from jaxprobe.conv import conv_module, conv_transpose_module  # noqa: E402
from jaxprobe.generator.networks import GRAY_WEIGHTS, Generator, to_agent_view  # noqa: E402

RESULTS = Path(__file__).with_name("results.csv")
PAD1 = ((1, 1), (1, 1))
# name: (input size, in, out, kernel, stride, padding, transposed)
LAYERS = {
  "nature conv 8x8/4 4->32 @84": (84, 4, 32, 8, 4, "VALID", False),
  "nature conv 4x4/2 32->64 @20": (20, 32, 64, 4, 2, "VALID", False),
  "nature conv 3x3/1 64->64 @9": (9, 64, 64, 3, 1, "VALID", False),
  "encoder conv 4x4/2 12->32 @84": (84, 12, 32, 4, 2, PAD1, False),
  "encoder conv 4x4/2 32->64 @42": (42, 32, 64, 4, 2, PAD1, False),
  "encoder conv 4x4/2 64->128 @21": (21, 64, 128, 4, 2, PAD1, False),
  "encoder conv 4x4/2 128->256 @10": (10, 128, 256, 4, 2, PAD1, False),
  "decoder up 4x4/2 256->128 @8": (8, 256, 128, 4, 2, "SAME", True),
  "decoder up 4x4/2 128->64 @16": (16, 128, 64, 4, 2, "SAME", True),
  "decoder up 4x4/2 64->32 @32": (32, 64, 32, 4, 2, "SAME", True),
  "decoder up 4x4/2 32->12 @64": (64, 32, 12, 4, 2, "SAME", True),
}
NUM_ACTIONS = 6


def time_rounds(variants: dict[str, Callable[[], object]], rounds: int, warmup: int = 2) -> dict[str, float]:
  """Median seconds per call of each variant, measured in interleaved rounds after warm-up."""
  for f in variants.values():
    for _ in range(warmup):
      f()
  times = {k: [] for k in variants}
  for _ in range(rounds):
    for k, f in variants.items():
      t = time.perf_counter()
      f()
      times[k].append(time.perf_counter() - t)
  return {k: statistics.median(v) for k, v in times.items()}


def jax_call(f, *args):
  f = jax.jit(f)
  return lambda: jax.block_until_ready(f(*args))


# ----- layers -----

def jax_layer_ops(module, x, params):
  y = module.apply(params, x)
  g = jnp.ones_like(y)
  return {
    "forward": jax_call(module.apply, params, x),
    "weight grad": jax_call(lambda p, x: jax.vjp(lambda p: module.apply(p, x), p)[1](g)[0], params, x),
    "input grad": jax_call(lambda p, x: jax.vjp(lambda x: module.apply(p, x), x)[1](g)[0], params, x),
  }


def torch_layer_ops(layer, x):
  """Backward-only timings: the graph is built once and replayed with retain_graph."""
  y = layer(x)
  y_in = layer(x.requires_grad_(True))
  g = torch.ones_like(y)
  return {
    "forward": lambda: layer(x.detach()),
    "weight grad": lambda: torch.autograd.grad(y, layer.weight, g, retain_graph=True),
    "input grad": lambda: torch.autograd.grad(y_in, x, g, retain_graph=True),
  }


def bench_layers(batch: int, rounds: int):
  rows = []
  for name, (size, cin, cout, k, s, pad, transposed) in LAYERS.items():
    x = jnp.asarray(np.random.RandomState(0).rand(batch, size, size, cin), jnp.float32)
    kw = dict(strides=(s, s), padding=pad)
    mods = ({"fast": conv_transpose_module("fast"), "xla": nn.ConvTranspose} if transposed
            else {"fast": conv_module("fast"), "xla": nn.Conv})
    params = mods["xla"](cout, (k, k), **kw).init(jax.random.PRNGKey(0), x[:1])
    ops = {impl: jax_layer_ops(m(cout, (k, k), **kw), x, params) for impl, m in mods.items()}
    xt = torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy())
    tpad = 1 if pad == PAD1 or pad == "SAME" else 0
    layer = (torch.nn.ConvTranspose2d(cin, cout, k, s, padding=1) if transposed
             else torch.nn.Conv2d(cin, cout, k, s, padding=tpad))
    ops["torch"] = torch_layer_ops(layer, xt)
    for op in ("forward", "weight grad", "input grad"):
      t = time_rounds({impl: o[op] for impl, o in ops.items()}, rounds)
      rows.append(("layers", f"{name} {op}", batch, t))
      print_row(rows[-1])
  return rows


# ----- Nature CNN parameter gradient -----

class TorchNature(torch.nn.Module):
  def __init__(self):
    super().__init__()
    self.convs = torch.nn.ModuleList([torch.nn.Conv2d(4, 32, 8, 4), torch.nn.Conv2d(32, 64, 4, 2),
                                      torch.nn.Conv2d(64, 64, 3, 1)])
    self.fc = torch.nn.Linear(3136, 512)
    self.head = torch.nn.Linear(512, NUM_ACTIONS)

  def forward(self, obs):
    x = obs / 255.0
    for c in self.convs:
      x = F.relu(c(x))
    return self.head(F.relu(self.fc(x.permute(0, 2, 3, 1).flatten(1))))


def jax_nature_grad(impl: str, obs):
  net = QNetwork(NUM_ACTIONS, conv=conv_module(impl))
  params = net.init(jax.random.PRNGKey(0), obs[:1])
  return jax_call(jax.grad(lambda p, o: jnp.mean(net.apply(p, o)["q"] ** 2)), params, obs)


def bench_nature(batch: int, rounds: int):
  obs = jnp.asarray(np.random.RandomState(0).randint(0, 256, (batch, 4, 84, 84)), jnp.float32)
  variants = {impl: jax_nature_grad(impl, obs) for impl in ("fast", "xla")}
  tnet, tobs = TorchNature(), torch.from_numpy(np.array(obs))

  def torch_step():
    tnet.zero_grad()
    (tnet(tobs) ** 2).mean().backward()
  variants["torch"] = torch_step
  row = ("nature", "Nature CNN parameter gradient", batch, time_rounds(variants, rounds))
  print_row(row)
  return [row]


# ----- generator training step -----

def jax_generator_step(gen: Generator, agent_conv, batch: int):
  x = jnp.asarray(np.random.RandomState(0).rand(batch, 84, 84, 12), jnp.float32)
  agent = QNetwork(NUM_ACTIONS, conv=agent_conv)
  agent_params = agent.init(jax.random.PRNGKey(1), jnp.zeros((1, 4, 84, 84)))
  variables = gen.init(jax.random.PRNGKey(0), x[:1])
  opt = optax.adam(1e-3)
  state = [variables["params"], variables["batch_stats"], opt.init(variables["params"])]

  def loss_fn(params, batch_stats, x, key):
    out, updates = gen.apply({"params": params, "batch_stats": batch_stats}, x, train=True,
                             rngs={"latent": key}, mutable=["batch_stats"])
    q = lambda view: agent.apply(agent_params, view)["q"]
    perception = jnp.mean((q(out["agent_view"]) - q(to_agent_view(x))) ** 2)
    kl = -0.5 * jnp.mean(jnp.sum(1 + out["logvar"] - out["mean"] ** 2 - jnp.exp(out["logvar"]), -1))
    return jnp.mean((out["colour"] - x) ** 2) + perception + 1e-4 * kl, updates["batch_stats"]

  @jax.jit
  def step(params, batch_stats, opt_state, x, key):
    (_, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch_stats, x, key)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), batch_stats, opt_state

  def run():
    state[:] = step(*state, x, jax.random.PRNGKey(2))
    jax.block_until_ready(state)
  return run


class TorchGenerator(torch.nn.Module):
  """The same generator in PyTorch: Conv2d encoder, ConvTranspose2d decoder."""

  def __init__(self, widths=(32, 64, 128, 256), latent=100):
    super().__init__()
    chans = (12, *widths)
    self.enc = torch.nn.Sequential(*[m for i in range(4) for m in (
      torch.nn.Conv2d(chans[i], chans[i + 1], 4, 2, 1), torch.nn.BatchNorm2d(chans[i + 1]), torch.nn.ReLU())])
    self.mean, self.logvar = torch.nn.Linear(5 * 5 * widths[-1], latent), torch.nn.Linear(5 * 5 * widths[-1], latent)
    self.dense = torch.nn.Linear(latent, 8 * 8 * widths[-1])
    outs = (*reversed(widths), 12)
    layers = []
    for i in range(4):
      layers.append(torch.nn.ConvTranspose2d(outs[i], outs[i + 1], 4, 2, 1))
      if i < 3:
        layers += [torch.nn.BatchNorm2d(outs[i + 1]), torch.nn.ReLU()]
    self.dec = torch.nn.Sequential(*layers)
    self.gray = torch.tensor(GRAY_WEIGHTS)

  def forward(self, x):
    h = self.enc(x).flatten(1)
    mean, logvar = self.mean(h), self.logvar(h)
    z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
    y = torch.sigmoid(self.dec(F.relu(self.dense(z)).view(-1, 256, 8, 8)))[:, :, 22:106, 22:106]
    return y, mean, logvar

  def agent_view(self, colour):
    n = colour.shape[0]
    return 255.0 * torch.einsum("nfchw,c->nfhw", colour.view(n, 4, 3, 84, 84), self.gray)


def torch_generator_step(batch: int):
  gen, agent = TorchGenerator(), TorchNature()
  agent.requires_grad_(False)
  opt = torch.optim.Adam(gen.parameters(), 1e-3)
  x = torch.rand(batch, 12, 84, 84)

  def run():
    opt.zero_grad()
    y, mean, logvar = gen(x)
    perception = ((agent(gen.agent_view(y)) - agent(gen.agent_view(x))) ** 2).mean()
    kl = -0.5 * (1 + logvar - mean ** 2 - logvar.exp()).sum(-1).mean()
    (((y - x) ** 2).mean() + perception + 1e-4 * kl).backward()
    opt.step()
  return run


def bench_generator(batch: int, rounds: int):
  fast, xla = conv_module("fast"), conv_module("xla")
  variants = {
    "fast": jax_generator_step(Generator(upsample="transpose", conv_impl="fast"), fast, batch),
    "fast subpixel": jax_generator_step(Generator(upsample="subpixel", conv_impl="fast"), fast, batch),
    "xla": jax_generator_step(Generator(upsample="transpose", conv_impl="xla"), xla, batch),
    "xla subpixel": jax_generator_step(Generator(upsample="subpixel", conv_impl="xla"), xla, batch),
    "torch": torch_generator_step(batch),
  }
  row = ("generator", "generator training step", batch, time_rounds(variants, rounds))
  print_row(row)
  return [row]


# ----- report -----

def versions() -> str:
  return f"jax {jax.__version__}, flax {flax.__version__}, torch {torch.__version__}"


def device() -> str:
  return f"{platform.processor() or platform.machine()} x{os.cpu_count()} ({jax.default_backend()})"


def print_row(row):
  group, case, batch, t = row
  fast = t["fast"]
  peers = "  ".join(f"{k} {v * 1e3:8.1f} ms ({v / fast:5.2f}x)" for k, v in t.items() if k != "fast")
  print(f"{case:52s} B={batch:<4d} fast {fast * 1e3:8.1f} ms  {peers}", flush=True)


def append_csv(rows):
  new = not RESULTS.exists()
  stamp = datetime.datetime.now().isoformat(timespec="seconds")
  load = os.getloadavg()[0]
  with RESULTS.open("a", newline="") as f:
    w = csv.writer(f)
    if new:
      w.writerow(["date", "benchmark", "case", "batch", "ours", "ours_ms", "peer", "peer_ms",
                  "ratio_peer_over_ours", "device", "versions", "load_avg_1min"])
    for group, case, batch, t in rows:
      for peer, v in t.items():
        if peer != "fast":
          w.writerow([stamp, f"conv_grad/{group}", case, batch, "fast", f"{t['fast'] * 1e3:.2f}", peer,
                      f"{v * 1e3:.2f}", f"{v / t['fast']:.2f}", device(), versions(), f"{load:.1f}"])


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--groups", default="layers,nature,generator")
  parser.add_argument("--rounds", type=int, default=7)
  args = parser.parse_args()
  torch.set_num_threads(os.cpu_count())
  print(f"device: {device()}; {versions()}; load average {os.getloadavg()[0]:.1f}")
  rows = []
  groups = args.groups.split(",")
  if "layers" in groups:
    rows += bench_layers(32, args.rounds)
  if "nature" in groups:
    rows += bench_nature(256, args.rounds) + bench_nature(32, args.rounds)
  if "generator" in groups:
    rows += bench_generator(16, args.rounds) + bench_generator(32, args.rounds)
  append_csv(rows)


if __name__ == "__main__":
  main()
