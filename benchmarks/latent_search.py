"""Latent search throughput (latent steps/s): jaxprobe vs eager PyTorch vs torch.compile (issue 8).

The search of docs/search.md: minimise E(z) = target(A(gray(G(z)))) + alpha * 0.5 ||z||^2 over a
batch of latents with Adam (the paper's energy; jaxprobe's defaults add a fitted prior and the
diversity term, timed as two more jaxprobe rows, and the last row is the default search against
the same search without the diversity term: the term's cost). Compared:
- jaxprobe: its own energy and search step (search_setup.py: `make_energy`, `make_step`,
  driven as `optimise` drives it on this backend), generator in the "transpose" layout;
  and, as a second row, the "subpixel" layout of the shipped Pong generators and of
  configs/generator_gpu.yaml (other weights of the same architecture family, so not checked for equality);
- PyTorch eager, as the paper's authors' code would run: a per-step Python loop, a
  `ConvTranspose2d` decoder, Adam over the batch of latents, the same weights copied from
  our Flax params (torch_models.py), fp32, no weight gradients;
- torch.compile of the same energy ("n/a" with the reason where it fails here).

Before timing, both sides must give the same energy and gradient for the same z.
Target: jaxprobe >= 2x eager PyTorch. Steady state: compile times are printed apart.

  .venv/bin/python benchmarks/latent_search.py [--batches 256] [--steps 3] [--peers eager,compile] [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses

import common  # noqa: I001  (first: sets the OpenMP policy before torch loads)
import jax
import jax.numpy as jnp
import numpy as np
import search_setup
import torch_models

EXTRA_VERSIONS = ()
PEERS = {"eager": "torch eager", "compile": "torch.compile"}  # --peers name: row label


def torch_target(name: str, tau: float):
  """The targets of jaxprobe.search.targets, batched over rows of q, in PyTorch."""
  import torch

  def softmax_tau(q):
    return (q * torch.softmax(q / tau, -1)).sum(-1)

  def softmin_tau(q):
    return (q * torch.softmax(-q / tau, -1)).sum(-1)

  targets = {
    "T+": lambda q: -softmin_tau(q),
    "T-": softmax_tau,
    "T+-": lambda q: softmin_tau(q) - softmax_tau(q),
    "S+": lambda q: -q.mean(-1),
    "S-": lambda q: q.mean(-1),
  }
  if name not in targets:
    raise SystemExit(f"target {name!r} has no PyTorch version here; use one of {', '.join(targets)}")
  return targets[name]


def torch_energy(gen, agent, target, alpha: float):
  def energy(z):
    return target(agent(gen.agent_view(gen.decode(z)))) + alpha * 0.5 * (z**2).sum(-1)

  return energy


def torch_search(energy, z0, steps: int, lr: float, device):
  """The authors' way: a Python loop of forward, backward and Adam step, from the same start each call."""
  import torch

  def run():
    z = z0.clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    for _ in range(steps):
      opt.zero_grad(set_to_none=True)
      energy(z).sum().backward()
      opt.step()
    common.torch_sync(device)

  return run


def energy_and_grad_torch(energy, z):
  import torch

  z = z.clone().requires_grad_(True)
  e = energy(z)
  (g,) = torch.autograd.grad(e.sum(), z)
  return e.detach().cpu().numpy(), g.cpu().numpy()


def energy_and_grad_jax(energy, z):
  key = jax.random.key(0)
  e = jax.jit(energy)(z, key)
  g = jax.jit(jax.grad(lambda z: energy(z, key).sum()))(z)
  return np.asarray(e), np.asarray(g)


def try_compile(energy, z0, device):
  """torch.compile'd energy, or (None, reason) where compiling or running it fails here."""
  import torch

  try:
    compiled = torch.compile(energy)
    (e, _), seconds = common.timed(lambda: energy_and_grad_torch(compiled, z0))
    common.torch_sync(device)
    return compiled, seconds, e
  except Exception as exc:  # any failure of the compiler stack: record it, do not stop the benchmark
    first_line = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
    reason = f"torch.compile failed: {type(exc).__name__}: {first_line}"
    return None, reason, None


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--batches", default="256", help="latents searched at once, comma-separated")
  parser.add_argument("--steps", type=int, default=3, help="search steps per timed call")
  parser.add_argument("--target", default="T+-", help="T+, T-, T+-, S+ or S-")
  parser.add_argument("--layouts", default="transpose,subpixel", help="jaxprobe generator layouts to time")
  parser.add_argument("--tolerance", type=float, default=1e-3, help="energy agreement (gradients: 10x)")
  common.add_common_args(parser, rounds=3, peers=tuple(PEERS))
  args = parser.parse_args()
  if args.quick:
    args.batches, args.steps, args.rounds, args.layouts = "8", 2, 1, "transpose"
  torch, device = common.setup_torch(args.torch_threads)
  print(common.header(EXTRA_VERSIONS, device))

  config = search_setup.probe_config(args.target)
  agent = search_setup.make_agent()
  layouts = args.layouts.split(",")
  # The transpose layout is the peer's architecture: the agreement check needs it even when it is not timed.
  bundles = {layout: search_setup.make_generator(upsample=layout) for layout in {"transpose", *layouts}}
  energies = {layout: search_setup.energy_fn(agent, b, args.target, config) for layout, b in bundles.items()}
  # jaxprobe's defaults beyond the paper's energy, on the transpose layout: a fitted prior's cost (a
  # 16-component mixture) and the diversity term's (docs/search.md, 'Diversity').
  fitted = dataclasses.replace(bundles["transpose"], prior=search_setup.random_mixture())
  with_prior = dataclasses.replace(config, prior="fitted")
  defaults = {
    "jaxprobe + fitted prior": search_setup.energy_fn(agent, fitted, args.target, with_prior),
    "jaxprobe + fitted prior + diversity": search_setup.energy_fn(
      agent, fitted, args.target, dataclasses.replace(with_prior, diversity=1.0)
    ),
  }
  t_agent = torch_models.nature_from_flax(agent.params, agent.spec.num_actions).to(device).requires_grad_(False)
  t_gen = torch_models.generator_from_flax(bundles["transpose"].variables).to(device).eval().requires_grad_(False)
  t_energy = torch_energy(t_gen, t_agent, torch_target(args.target, config.tau), config.alpha)

  rows = []
  for batch in common.int_list(args.batches):
    z = search_setup.start_latents(batch)
    z_t = torch.from_numpy(np.array(z)).to(device)
    e_ours, g_ours = energy_and_grad_jax(energies["transpose"], jnp.asarray(z))
    e_t, g_t = energy_and_grad_torch(t_energy, z_t)
    common.check_agree(f"energy {args.target}, batch {batch}", e_ours, e_t, args.tolerance)
    common.check_agree(f"energy gradient, batch {batch}", g_ours, g_t, 10 * args.tolerance)

    variants, labels = {}, {}
    searches = {("jaxprobe" if layout == "transpose" else f"jaxprobe {layout}"): energies[layout] for layout in layouts}
    searches.update(defaults)
    for name, energy in searches.items():
      runner = search_setup.search_runner(energy, jnp.asarray(z), args.steps, config)
      print(f"{name}: compiled the search step in {runner.compile_s:.1f} s ({runner.loop} loop)")
      variants[name] = runner.run
      labels[name] = f"{name} ({runner.loop} loop)"
    peers = [PEERS[p] for p in args.peers]
    if "eager" in args.peers:
      variants["torch eager"] = torch_search(t_energy, z_t, args.steps, config.lr, device)
    compile_note = ""
    if "compile" in args.peers:
      compiled, info, e_c = try_compile(t_energy, z_t, device)
      if compiled is None:
        compile_note = info
        print(f"torch.compile: n/a ({info})")
      else:
        print(
          f"torch.compile: first call (compile) {info:.1f} s; energy vs eager: "
          f"{common.relative_difference(e_c, e_t):.1e}"
        )
        variants["torch.compile"] = torch_search(compiled, z_t, args.steps, config.lr, device)
    times = common.time_rounds(variants, args.rounds, warmup=1)
    # The diversity term's cost: the default search against the same search without the term.
    pairs = [(ours, peer) for ours in labels for peer in peers]
    pairs.append(("jaxprobe + fitted prior + diversity", "jaxprobe + fitted prior"))
    for ours, peer in pairs:
      rows.append(
        common.Row(
          f"latent search {args.target}, {args.steps} steps",
          batch,
          labels[ours],
          times[ours],
          peer,
          times.get(peer),
          batch * args.steps,
          "latent steps",
          compile_note if peer not in times else "",
        )
      )
  common.finish("latent_search", "Latent search (target >= 2x eager PyTorch)", rows, args, EXTRA_VERSIONS, device)


if __name__ == "__main__":
  main()
