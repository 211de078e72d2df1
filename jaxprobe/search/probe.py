"""`jaxprobe probe`: search for states of interest for every target, in latent or pixel space.

Latent space (the paper's method): E(u) = target(A(gray(G(z)))) + alpha * 0.5 ||u||^2
from u ~ N(0, I), where z = m + s * u in the standardised coordinates of the encoder's
latents on real states (`GeneratorBundle.latent_coordinates`): at the paper's KL weight the
data does not lie near N(0, I) in z itself. Pixel space (the paper's baseline, activation maximisation):
the agent's input itself is optimised from noise, x = 255 sigmoid(u), with
total-variation, blur and jitter regularisers; it finds states the agent reads
as intended but that lie far from the game's states.

    results = probe(agent, generator, ["T-", "T+"], ProbeConfig(num=256, steps=200))
"""
from __future__ import annotations

import dataclasses
import json
import re
import time
from pathlib import Path
from typing import Literal, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from jaxprobe import saliency
from jaxprobe.agents.agent import Agent, greedy_actions
from jaxprobe.agents.checkpoint import fingerprint
from jaxprobe.config import to_dict
from jaxprobe.evaluate.novelty import spread
from jaxprobe.errors import UserError
from jaxprobe.generator.checkpoint import GeneratorBundle
from jaxprobe.generator.goggles import check_generator_fits
from jaxprobe.generator.networks import to_agent_view
from jaxprobe.parallel import batch_mesh, batch_sharding
from jaxprobe.report.images import grid, save_png, value_bars
from jaxprobe.search.optimise import OptimiseConfig, optimise, resolve_chunk
from jaxprobe.search.targets import Target, get_target


@dataclasses.dataclass(frozen=True)
class ProbeConfig:
  space: Literal["latent", "pixel"] = "latent"
  num: int = 256             # states per target
  steps: int = 200
  lr: float = 0.05           # Adam; pixel space optimises logits of the image
  alpha: float = 0.01        # weight of 0.5 ||z||^2 (latent space)
  tau: float = 1.0           # temperature of the soft max / min in the targets
  seed: int = 0
  chunk: int = 0             # states per compiled program (0: 4096 on accelerators, 1024 on CPU)
  loop: Literal["auto", "python", "scan"] = "auto"
  patience: int = 0          # early stop per state (0: off)
  tv_weight: float = 0.3     # pixel space: total variation (per pixel, in [0, 1] units)
  blur_sigma: float = 0.5    # pixel space: the agent sees the image blurred by this
  jitter: int = 3            # pixel space: random shifts up to this many pixels each step


class ProbeResult(NamedTuple):
  target: str
  reads: str
  variables: np.ndarray      # (num, latent_dim) standardised latents u, or (num, 4, 84, 84) pixel logits
  colour: np.ndarray         # (num, 84, 84, 12) uint8 (pixel space: the gray frames as RGB)
  gray: np.ndarray           # (num, 4, 84, 84) uint8, the agent's view
  outputs: dict              # the agent's outputs on the found states
  greedy: np.ndarray         # (num,)
  energy_start: np.ndarray
  energy_end: np.ndarray
  curve: np.ndarray          # (steps,) mean energy
  seconds: float             # the search itself, compilation excluded
  compile_s: float = 0.0
  spread: float = 0.0        # mean squared difference between two found states (evaluate.novelty.spread)


def total_variation(x: jnp.ndarray) -> jnp.ndarray:
  """Mean absolute difference of neighbouring pixels per state: `(N, ..., H, W)` -> `(N,)`."""
  dy = jnp.abs(jnp.diff(x, axis=-2)).reshape(x.shape[0], -1).mean(1)
  dx = jnp.abs(jnp.diff(x, axis=-1)).reshape(x.shape[0], -1).mean(1)
  return dy + dx


def jitter_shift(x: jnp.ndarray, key: jax.Array, max_shift: int) -> jnp.ndarray:
  """Rolls each state by a random offset in [-max_shift, max_shift] on both image axes."""
  if max_shift <= 0:
    return x
  shifts = jax.random.randint(key, (x.shape[0], 2), -max_shift, max_shift + 1)
  return jax.vmap(lambda xi, s: jnp.roll(xi, (s[0], s[1]), axis=(-2, -1)))(x, shifts)


def latent_renderer(generator: GeneratorBundle):
  """`render(variables, u) -> (colour, agent view)` of z = mean + std * u (the data's latent coordinates)."""
  mean, std = generator.latent_coordinates()

  def render(variables, u):
    colour = generator.spec.network().apply(variables, mean + std * u, method="decode")
    return colour, to_agent_view(colour)
  return render


def make_energy(agent: Agent, target: Target, config: ProbeConfig, generator: GeneratorBundle | None):
  """`energy(v, key) -> (n,)` for the configured space."""
  spec, params = agent.spec, agent.params
  score = jax.vmap(lambda out: target.energy(out))
  if config.space == "latent":
    render = latent_renderer(generator)

    def energy(z, key):
      del key
      _, obs = render(generator.variables, z)
      return score(spec.apply(params, obs)) + config.alpha * 0.5 * jnp.sum(z**2, axis=-1)
  else:
    def energy(u, key):
      x = 255.0 * jax.nn.sigmoid(u)
      seen = jitter_shift(saliency.gaussian_blur(x, config.blur_sigma) if config.blur_sigma > 0 else x, key,
                          config.jitter)
      return score(spec.apply(params, seen)) + config.tv_weight * total_variation(x / 255.0)
  return energy


def check_inputs(agent: Agent, generator: GeneratorBundle | None, config: ProbeConfig) -> None:
  if config.num <= 0:
    raise UserError(f"--num must be positive, got {config.num}")
  if config.steps <= 0:
    raise UserError(f"--steps must be positive, got {config.steps}")
  if config.space == "latent":
    if generator is None:
      raise UserError("latent-space search needs --generator (or use --space pixel)")
    if generator.spec.env_id != agent.spec.env_id:
      raise UserError(f"the generator was trained on {generator.spec.env_id} but the agent plays "
                      f"{agent.spec.env_id}; use a generator trained for this agent")
    check_generator_fits(generator, agent)


def initial_variables(agent: Agent, generator: GeneratorBundle | None, config: ProbeConfig) -> jnp.ndarray:
  """The seeded start: z ~ N(0, I), or uniform-noise images (as logits). Independent of chunking."""
  key = jax.random.key(config.seed)
  if config.space == "latent":
    return jax.random.normal(key, (config.num, generator.spec.latent_dim))
  x = jax.random.uniform(key, (config.num, *agent.spec.obs_shape), minval=0.05, maxval=0.95)
  return jnp.log(x) - jnp.log1p(-x)


def probe_target(agent: Agent, generator: GeneratorBundle | None, target: Target, config: ProbeConfig,
                 sharding=None, on_chunk=None) -> ProbeResult:
  energy = make_energy(agent, target, config, generator)
  v0 = initial_variables(agent, generator, config)
  t0 = time.perf_counter()
  result = optimise(energy, v0, OptimiseConfig(steps=config.steps, lr=config.lr, chunk=config.chunk,
                                               loop=config.loop, patience=config.patience),
                    jax.random.key(config.seed + 1), sharding=sharding, name=target.name, on_chunk=on_chunk)
  seconds = time.perf_counter() - t0 - result.compile_s
  if config.space == "latent":
    render = jax.jit(latent_renderer(generator))
    colour, gray = (np.asarray(a) for a in render(generator.variables, result.v))
    colour = np.round(colour * 255).astype(np.uint8)
  else:
    gray = np.asarray(255.0 * jax.nn.sigmoid(result.v))
    colour = np.repeat(np.round(gray).astype(np.uint8).transpose(0, 2, 3, 1), 3, axis=-1)
  outputs = jax.device_get(jax.jit(agent.spec.apply)(agent.params, gray))
  view = np.round(gray).astype(np.uint8)
  return ProbeResult(target.name, target.reads, np.asarray(result.v), colour, view,
                     outputs, np.asarray(greedy_actions(agent.spec, outputs)), result.energy_start,
                     result.energy_end, result.curve, seconds, result.compile_s, spread(view))


def probe(agent: Agent, generator: GeneratorBundle | None, targets: Sequence[str], config: ProbeConfig,
          progress: bool = True) -> list[ProbeResult]:
  """Runs the search for each target name; all states of a target are one (chunked) compiled program."""
  check_inputs(agent, generator, config)
  resolved = [get_target(t, agent.spec.kind, agent.spec.num_actions, config.tau) for t in targets]
  if not resolved:
    raise UserError("give at least one --target")
  mesh = batch_mesh()
  sharding = batch_sharding(mesh) if mesh.size > 1 and resolve_chunk(config.chunk) % mesh.size == 0 else None
  bar = tqdm(total=config.num * len(resolved), unit="state", desc=f"probe ({config.space})", disable=not progress)
  results = []
  for target in resolved:
    bar.set_postfix(target=target.name)
    results.append(probe_target(agent, generator, target, config, sharding, on_chunk=bar.update))
  bar.close()
  return results


def safe_name(target: str) -> str:
  return re.sub(r"[^A-Za-z0-9_]", lambda m: {"+": "plus", "-": "minus", ":": "_"}.get(m.group(), "_"), target)


def write_run(out: str | Path, agent: Agent, generator: GeneratorBundle | None, config: ProbeConfig,
              results: Sequence[ProbeResult], agent_path: str = "", generator_path: str = "",
              show: int = 16) -> Path:
  """Per target a folder of arrays, a JSON and two images; `probe.json` describes the run."""
  out = Path(out)
  if out.exists() and not out.is_dir():
    raise UserError(f"output directory {out} is a file; choose a directory path")
  out.mkdir(parents=True, exist_ok=True)
  head = agent.spec.action_head
  summary = []
  for r in results:
    folder = out / f"{config.space}_{safe_name(r.target)}"
    folder.mkdir(exist_ok=True)
    np.save(folder / "gray.npy", r.gray)
    np.save(folder / "colour.npy", r.colour)
    if config.space == "latent":
      mean, std = generator.latent_coordinates()
      np.save(folder / "latents.npy", mean + std * r.variables)  # z itself, for the decoder
    else:
      np.save(folder / "pixel_logits.npy", r.variables)
    order = np.argsort(r.energy_end)
    best = order[:show]
    tiles, captions = [], []
    for i in best:
      frame = r.colour[i, ..., -3:]
      big = np.kron(frame, np.ones((2, 2, 1), np.uint8))
      bars = value_bars(r.outputs[head][i], big.shape[1], 36, int(r.greedy[i]))
      tiles.append(np.concatenate([big, bars], axis=0))
      captions.append(f"#{i} E={r.energy_end[i]:.2f} a={r.greedy[i]}")
    save_png(folder / "best.png", grid(tiles, captions, cols=4))
    _plot_energy(folder / "energy.png", r)
    hist = np.bincount(r.greedy, minlength=agent.spec.num_actions).tolist()
    record = dict(target=r.target, reads=r.reads, space=config.space, num=len(r.gray), steps=config.steps,
                  energy_start_mean=float(r.energy_start.mean()), energy_end_mean=float(r.energy_end.mean()),
                  energy_end_best=float(r.energy_end.min()), greedy_action_histogram=hist,
                  spread=r.spread,
                  seconds=round(r.seconds, 2), compile_s=round(r.compile_s, 2), state_steps_per_s=round(len(r.gray) * config.steps / r.seconds, 1),
                  states_per_s=round(len(r.gray) / r.seconds, 2), best_first=order.tolist(),
                  energy_start=r.energy_start.round(5).tolist(), energy_end=r.energy_end.round(5).tolist(),
                  greedy_action=r.greedy.tolist(),
                  outputs={k: np.asarray(v).round(5).tolist() for k, v in r.outputs.items()},
                  curve=np.asarray(r.curve).round(5).tolist())
    (folder / "run.json").write_text(json.dumps(record) + "\n")
    summary.append({k: record[k] for k in ("target", "reads", "energy_start_mean", "energy_end_mean",
                                           "greedy_action_histogram", "seconds", "compile_s", "state_steps_per_s",
                                           "states_per_s")}
                   | dict(folder=folder.name))
  meta = dict(agent=dict(path=agent_path, fingerprint=fingerprint(agent.params), **agent.spec.to_json()),
              generator=None if generator is None else dict(path=generator_path, **dataclasses.asdict(generator.spec)),
              config=to_dict(config), devices=[str(d) for d in jax.devices()], targets=summary)
  (out / "probe.json").write_text(json.dumps(meta, indent=2) + "\n")
  return out


def _plot_energy(path: Path, r: ProbeResult) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(4.5, 2.8), dpi=110)
  ax.plot(np.arange(1, len(r.curve) + 1), r.curve, color="tab:red")
  ax.set_xlabel("optimisation step")
  ax.set_ylabel("mean energy")
  ax.set_title(f"target {r.target}")
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def summary_table(results: Sequence[ProbeResult]) -> str:
  lines = [f"{'target':14s} {'energy before':>14s} {'energy after':>13s} {'search s':>9s} {'compile s':>9s} "
           f"{'states/s':>9s} {'latent-steps/s':>14s} {'spread':>8s}  greedy actions"]
  for r in results:
    hist = np.bincount(r.greedy)
    steps = len(r.curve)
    lines.append(f"{r.target:14s} {r.energy_start.mean():14.3f} {r.energy_end.mean():13.3f} {r.seconds:9.2f} "
                 f"{r.compile_s:9.2f} {len(r.gray) / r.seconds:9.1f} {len(r.gray) * steps / r.seconds:14.0f} "
                 f"{r.spread:8.1e}  "
                 f"{' '.join(f'{a}:{n}' for a, n in enumerate(hist) if n)}")
  lines.append("(spread: mean squared difference between two found states, in [0, 1] units; near 0: one state)")
  return "\n".join(lines)
