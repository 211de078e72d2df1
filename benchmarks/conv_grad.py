"""Convolution gradients on this machine: jaxprobe.conv ("fast", "hybrid") vs XLA's own vs PyTorch eager.

Four groups, each timed in interleaved rounds (every variant once per round, so a burst
of other work on the machine hits all variants alike), reporting the median round:
- layers: forward, weight gradient, input gradient of every convolution shape we use
  ("hybrid", the CPU default for ordinary convolutions, only where it differs: strided ones);
- nature: the Nature CNN parameter gradient (batch 256 is the PPO minibatch, and 32);
- defaults: the same gradient as a user gets it by default, jaxprobe's (`conv_impl: auto`, with
  the XLA flag `import jaxprobe` sets) against XLA's (`nn.Conv`, no flag). The flag is
  process-wide, so each side runs in a worker process of its own, and this script times them
  in interleaved rounds, one call per worker per round;
- generator: one generator training step (encoder, decoder, crop, grayscale, perception
  loss through a frozen Nature CNN, Adam), batch 16 and 32.

Before the nature group is timed, fast, hybrid and XLA must give the same parameter gradient
(--tolerance), and so must the two defaults. The timing harness, table and results.csv rows
are common.py's; --quick times the nature and defaults groups at batch 8, one round.

  nice -n -10 .venv/bin/python benchmarks/conv_grad.py [--groups layers,nature,generator,defaults] [--rounds 7] \
      [--quick]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

import common  # noqa: I001  (first: sets the XLA and OpenMP settings before JAX and torch start)
import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
from flax import linen as nn
from torch_models import TorchGenerator, TorchNature, nature_from_flax

from jaxprobe.agents.nature_cnn import QNetwork
from jaxprobe.conv import conv_module, conv_transpose_module
from jaxprobe.generator.autoencoder import Generator, to_agent_view

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


def jax_call(f, *args):
  return common.blocking(jax.jit(f), *args)


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
    mods = (
      {"fast": conv_transpose_module("fast"), "xla": nn.ConvTranspose}
      if transposed
      else {"fast": conv_module("fast"), "xla": nn.Conv, **({"hybrid": conv_module("hybrid")} if s > 1 else {})}
    )
    params = mods["xla"](cout, (k, k), **kw).init(jax.random.PRNGKey(0), x[:1])
    ops = {impl: jax_layer_ops(m(cout, (k, k), **kw), x, params) for impl, m in mods.items()}
    xt = torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy())
    tpad = 1 if pad == PAD1 or pad == "SAME" else 0
    layer = (
      torch.nn.ConvTranspose2d(cin, cout, k, s, padding=1)
      if transposed
      else torch.nn.Conv2d(cin, cout, k, s, padding=tpad)
    )
    ops["torch"] = torch_layer_ops(layer, xt)
    for op in ("forward", "weight grad", "input grad"):
      t = common.time_rounds({impl: o[op] for impl, o in ops.items()}, rounds, progress=False)
      rows.append(("layers", f"{name} {op}", batch, t))
      print_row(rows[-1])
  return rows


# ----- Nature CNN parameter gradient -----


def nature_params(impl: str, obs):
  return QNetwork(NUM_ACTIONS, conv=conv_module(impl)).init(jax.random.PRNGKey(0), obs[:1])


def jax_nature_grad(impl: str, params):
  """The jitted parameter gradient of mean(q^2) through the Nature CNN built on `impl`'s convolutions."""
  net = QNetwork(NUM_ACTIONS, conv=conv_module(impl))
  return jax.jit(jax.grad(lambda p, o: jnp.mean(net.apply(p, o)["q"] ** 2)))


def check_nature(grads: dict, batch: int, tol: float) -> None:
  """fast, hybrid and XLA must give the same parameter gradient."""
  diff = max(
    common.relative_difference(a, b)
    for impl in ("fast", "hybrid")
    for a, b in zip(jax.tree.leaves(grads[impl]), jax.tree.leaves(grads["xla"]))
  )
  print(
    f"check: Nature CNN parameter gradient, fast and hybrid vs xla, batch {batch}: max relative difference "
    f"{diff:.2e} (tolerance {tol:g})"
  )
  if not diff <= tol:
    raise SystemExit("the fast and the XLA convolutions give different gradients: timing them compares nothing")


def bench_nature(batch: int, rounds: int, tol: float):
  obs = jnp.asarray(np.random.RandomState(0).randint(0, 256, (batch, 4, 84, 84)), jnp.float32)
  params = nature_params("xla", obs)
  grads = {impl: jax_nature_grad(impl, params) for impl in ("fast", "hybrid", "xla")}
  check_nature({impl: g(params, obs) for impl, g in grads.items()}, batch, tol)
  variants = {impl: jax_call(g, params, obs) for impl, g in grads.items()}
  tnet, tobs = nature_from_flax(params, NUM_ACTIONS), torch.from_numpy(np.array(obs))

  def torch_step():
    tnet.zero_grad()
    (tnet(tobs) ** 2).mean().backward()

  variants["torch"] = torch_step
  row = ("nature", "Nature CNN parameter gradient", batch, common.time_rounds(variants, rounds))
  print_row(row)
  return [row]


# ----- defaults: jaxprobe's Nature CNN gradient against XLA's, each with its own process-wide flags -----

YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type="  # the flag `import jaxprobe` adds (jaxprobe/__init__.py)
# Worker environments: this process's XLA_FLAGS already hold jaxprobe's flag, so XLA's side drops it.
DEFAULTS = {
  "jaxprobe default (auto, YNNPACK off)": ("auto", {}),
  "XLA default (nn.Conv, YNNPACK on)": (
    "xla",
    {
      "JAXPROBE_KEEP_XLA_FLAGS": "1",
      "XLA_FLAGS": " ".join(f for f in os.environ.get("XLA_FLAGS", "").split() if f != YNN_FLAG),
    },
  ),
}


def nature_worker(impl: str, batch: int, grads_path: str) -> None:
  """Worker side of the defaults group: saves the gradient, says "ready", then times one call per "run" line."""
  obs = jnp.asarray(np.random.RandomState(0).randint(0, 256, (batch, 4, 84, 84)), jnp.float32)
  params = nature_params("xla", obs)
  grad = jax_nature_grad(impl, params)
  np.savez(grads_path, *[np.asarray(g) for g in jax.tree.leaves(grad(params, obs))])
  run = common.blocking(grad, params, obs)
  print(f"ready, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}", flush=True)
  for line in sys.stdin:
    if line.strip() == "run":
      run()
      print("done", flush=True)


def bench_defaults(batch: int, rounds: int, tol: float):
  """Both sides' workers, checked to give the same gradient, then timed in interleaved rounds from here."""
  with tempfile.TemporaryDirectory() as tmp:
    workers, calls = {}, {}
    for i, (name, (impl, env)) in enumerate(DEFAULTS.items()):
      path = os.path.join(tmp, f"grads{i}.npz")
      workers[name] = (
        subprocess.Popen(
          [sys.executable, __file__, "--nature-worker", impl, "--batch", str(batch), "--grads", path],
          stdin=subprocess.PIPE,
          stdout=subprocess.PIPE,
          text=True,
          env={**os.environ, **env},
        ),
        path,
      )
    for name, (proc, _path) in workers.items():
      line = proc.stdout.readline().strip()
      if not line.startswith("ready"):
        raise SystemExit(f"the {name} worker failed before timing (exit {proc.wait()})")
      print(f"{name}: worker {line}", flush=True)
      calls[name] = lambda proc=proc: (proc.stdin.write("run\n"), proc.stdin.flush(), proc.stdout.readline())
    (a, b) = ([saved[k] for k in saved.files] for saved in (np.load(path) for _, path in workers.values()))
    diff = max(common.relative_difference(x, y) for x, y in zip(a, b))
    print(
      f"check: Nature CNN parameter gradient, jaxprobe's default vs XLA's default, batch {batch}: max relative "
      f"difference {diff:.2e} (tolerance {tol:g})",
      flush=True,
    )
    if not diff <= tol:
      raise SystemExit("jaxprobe's and XLA's defaults give different gradients: timing them compares nothing")
    times = common.time_rounds(calls, rounds)
    for proc, _ in workers.values():
      proc.stdin.close()
      proc.wait()
  (ours, ours_s), (peer, peer_s) = times.items()
  return [common.Row("Nature CNN parameter gradient", batch, ours, ours_s, peer, peer_s, batch, "samples")]


# ----- generator training step -----


def jax_generator_step(gen: Generator, agent_conv, batch: int):
  x = jnp.asarray(np.random.RandomState(0).rand(batch, 84, 84, 12), jnp.float32)
  agent = QNetwork(NUM_ACTIONS, conv=agent_conv)
  agent_params = agent.init(jax.random.PRNGKey(1), jnp.zeros((1, 4, 84, 84)))
  variables = gen.init(jax.random.PRNGKey(0), x[:1])
  opt = optax.adam(1e-3)
  state = [variables["params"], variables["batch_stats"], opt.init(variables["params"])]

  def loss_fn(params, batch_stats, x, key):
    out, updates = gen.apply(
      {"params": params, "batch_stats": batch_stats}, x, train=True, rngs={"latent": key}, mutable=["batch_stats"]
    )
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


def torch_generator_step(batch: int):
  gen, agent = TorchGenerator(), TorchNature(NUM_ACTIONS)
  agent.requires_grad_(False)
  opt = torch.optim.Adam(gen.parameters(), 1e-3)
  x = torch.rand(batch, 12, 84, 84)

  def run():
    opt.zero_grad()
    y, mean, logvar = gen(x)
    perception = ((agent(gen.agent_view(y)) - agent(gen.agent_view(x))) ** 2).mean()
    kl = -0.5 * (1 + logvar - mean**2 - logvar.exp()).sum(-1).mean()
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
  row = ("generator", "generator training step", batch, common.time_rounds(variants, rounds))
  print_row(row)
  return [row]


# ----- report -----


def print_row(row):
  """One line per case as it is measured: the runs are long, so progress shows."""
  group, case, batch, t = row
  fast = t["fast"]
  peers = "  ".join(f"{k} {v * 1e3:8.1f} ms ({v / fast:5.2f}x)" for k, v in t.items() if k != "fast")
  print(f"{case:52s} B={batch:<4d} fast {fast * 1e3:8.1f} ms  {peers}", flush=True)


def to_rows(rows) -> dict[str, list[common.Row]]:
  """(group, case, batch, times) -> the harness's rows per group: fast against every other variant."""
  out = {}
  for group, case, batch, t in rows:
    out.setdefault(group, []).extend(
      common.Row(case, batch, "fast", t["fast"], peer, v, batch, "samples") for peer, v in t.items() if peer != "fast"
    )
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--groups", default="layers,nature,generator,defaults")
  parser.add_argument("--tolerance", type=float, default=1e-2, help="fast vs XLA Nature CNN gradients")
  parser.add_argument("--nature-worker", help=argparse.SUPPRESS)  # the defaults group's workers
  parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
  parser.add_argument("--grads", help=argparse.SUPPRESS)
  common.add_common_args(parser, rounds=7)
  args = parser.parse_args()
  if args.nature_worker:
    return nature_worker(args.nature_worker, args.batch, args.grads)
  common.setup_torch(args.torch_threads)
  print(common.header())
  groups = args.groups.split(",")
  if args.quick:
    groups, args.rounds = ["nature", "defaults"], 1
  rows = []
  if "layers" in groups:
    rows += bench_layers(32, args.rounds)
  if "nature" in groups:
    sizes = (8,) if args.quick else (256, 32)
    rows += [r for b in sizes for r in bench_nature(b, args.rounds, args.tolerance)]
  if "generator" in groups:
    rows += bench_generator(16, args.rounds) + bench_generator(32, args.rounds)
  for group, group_rows in to_rows(rows).items():
    common.finish(f"conv_grad/{group}", f"conv_grad: {group} (fast vs XLA's own and PyTorch eager)", group_rows, args)
  if "defaults" in groups:
    defaults = [r for b in ((8,) if args.quick else (256, 32)) for r in bench_defaults(b, args.rounds, args.tolerance)]
    common.finish("conv_grad/defaults", "conv_grad: defaults (issue 9's target: >= 2x XLA's own)", defaults, args)


if __name__ == "__main__":
  main()
