"""The two spaces a search runs in, and `probe`: every target's states found in one of them.

Latent space (the paper's method): E(u) = target(A(gray(G(z)))) + alpha * P(u) from u drawn
from the latent prior, where z = m + s * u in the standardised coordinates of the encoder's
latents on real states (`GeneratorBundle.latent_coordinates`): at the paper's KL weight the
data does not lie near N(0, I) in z itself. P(u) = -log p(u) - D/2 log(2 pi) of the generator's
fitted prior (`generator.prior`, `jaxprobe fit-prior`), and 0.5 ||u||^2, the paper's term,
for a generator without one. Pixel space (the paper's baseline, activation
maximisation): the agent's input itself is optimised from noise, x = 255 sigmoid(u), with
total-variation, blur and jitter regularisers; it finds states the agent reads as intended
but that lie far from the game's states. docs/search.md has the formulas and values.

    results = probe(agent, generator, ["T-", "T+"], ProbeConfig(num=256, steps=200))
"""

from __future__ import annotations

import dataclasses
import time
from typing import Literal, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from jaxprobe import saliency
from jaxprobe.agents.agent import Agent, greedy_actions
from jaxprobe.collection.dataset import Dataset
from jaxprobe.config import COUNT, NONNEGATIVE, POSITIVE, POSITIVE_INT, SEED, option, setting
from jaxprobe.errors import UserError
from jaxprobe.generator import prior
from jaxprobe.generator.spec import GeneratorBundle, check_same_agent, check_same_game
from jaxprobe.generator.train import encoder_means
from jaxprobe.parallel import batch_mesh, batch_sharding
from jaxprobe.search.diversity import repulsion
from jaxprobe.search.modes import Modes, find_modes
from jaxprobe.search.optimise import OptimiseConfig, optimise, resolve_chunk
from jaxprobe.search.targets import Target, get_target


@dataclasses.dataclass(frozen=True)
class ProbeConfig(OptimiseConfig):
  """A search: the optimiser's settings (inherited), where to search, how many states, the energy's weights."""

  space: Literal["latent", "pixel"] = option("latent", "where to search")
  init: Literal["prior", "data", "data-nearest"] = option(
    "prior",
    "latent starts: samples of the generator's latent prior, encodings of random states of --dataset, or of "
    "its states nearest the target (lowest target energy)",
  )
  num: int = option(256, "states per target", valid=POSITIVE_INT)
  prior: Literal["fitted", "normal"] = option(
    "fitted",
    "the latent prior p(u) the search starts from and is held to: the generator's fitted mixture "
    "(`jaxprobe fit-prior`), or N(0, I), the paper's",
  )
  alpha: float = option(0.01, "weight of the latent prior term -log p(u) (0.5||u||^2 for N(0, I))", valid=NONNEGATIVE)
  diversity: float = option(
    1.0,
    "weight of the repulsion between the rows of a batch in latent space, which keeps a target's states "
    "apart (0: independent searches, as the paper's)",
    valid=NONNEGATIVE,
  )
  tau: float = option(1.0, "temperature of the targets' soft max/min", valid=POSITIVE)
  seed: int = option(0, "seed of the starting points", valid=SEED)
  tv_weight: float = setting(0.3, NONNEGATIVE)  # pixel space: total variation (per pixel, in [0, 1] units)
  blur_sigma: float = setting(0.5, NONNEGATIVE)  # pixel space: the agent sees the image blurred by this
  jitter: int = setting(3, COUNT)  # pixel space: random shifts up to this many pixels each step


class ProbeResult(NamedTuple):
  """The states found for one target, with the agent's reading of them."""

  target: str
  reads: str
  variables: np.ndarray  # (num, latent_dim) standardised latents u, or (num, 4, 84, 84) pixel logits
  colour: np.ndarray  # (num, 84, 84, 12) uint8 (pixel space: the gray frames as RGB)
  gray: np.ndarray  # (num, 4, 84, 84) uint8, the agent's view
  outputs: dict  # the agent's outputs on the found states
  greedy: np.ndarray  # (num,)
  energy_start: np.ndarray
  energy_end: np.ndarray
  curve: np.ndarray  # (steps,) mean energy
  seconds: float  # the search itself, compilation excluded
  compile_s: float = 0.0
  start_rows: np.ndarray | None = None  # (num,) dataset rows the search started from (`init` data, data-nearest)
  modes: Modes | None = None  # the found states grouped into modes (`modes.find_modes`)


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
  return lambda variables, u: generator.decode(variables, mean + std * u)


def search_prior(generator: GeneratorBundle, config: ProbeConfig) -> prior.GaussianMixture:
  """The latent prior of `config.prior`: the generator's fitted mixture, or N(0, I)."""
  if config.prior == "normal":
    return prior.standard_normal(generator.spec.latent_dim)
  if generator.prior is None:
    raise UserError(
      "this generator has no fitted latent prior: fit one with `jaxprobe fit-prior --generator GENERATOR "
      "--dataset ITS_TRAINING_DATA`, or search with --prior normal (the paper's N(0, I))"
    )
  return generator.prior


def make_energy(agent: Agent, target: Target, config: ProbeConfig, generator: GeneratorBundle | None):
  """`energy(v, key) -> (n,)` for the configured space."""
  spec, params = agent.spec, agent.params
  score = jax.vmap(lambda out: target.energy(out))
  if config.space == "latent":
    render = latent_renderer(generator)

    latent_prior = search_prior(generator, config)
    prior_term = jax.vmap(lambda x: prior.prior_energy(latent_prior, x))

    def energy(u, key):
      del key
      _, obs = render(generator.variables, u)
      e = score(spec.apply(params, obs)) + config.alpha * prior_term(u)
      return e + config.diversity * repulsion(u) if config.diversity else e
  else:

    def energy(u, key):
      x = 255.0 * jax.nn.sigmoid(u)
      seen = jitter_shift(
        saliency.gaussian_blur(x, config.blur_sigma) if config.blur_sigma > 0 else x, key, config.jitter
      )
      return score(spec.apply(params, seen)) + config.tv_weight * total_variation(x / 255.0)

  return energy


def check_inputs(
  agent: Agent, generator: GeneratorBundle | None, config: ProbeConfig, dataset: Dataset | None = None
) -> None:
  """A UserError for a search that cannot run: a generator that does not fit, or starts from data
  without a dataset of the agent's game. (The config's ranges are checked when it is built.)"""
  if config.space == "latent":
    if generator is None:
      raise UserError("latent-space search needs --generator (or use --space pixel)")
    check_same_agent(agent, generator=generator)
    search_prior(generator, config)
  if config.init != "prior":
    if config.space != "latent":
      raise UserError(f"--init {config.init} starts latent searches; pixel space starts from noise")
    if dataset is None:
      raise UserError(f"--init {config.init} needs --dataset: states of the agent's game to start from")
    check_same_game(agent, dataset)


def start_rows(agent: Agent, target: Target, config: ProbeConfig, dataset: Dataset) -> np.ndarray:
  """The dataset rows `(num,)` a data start encodes: seeded random ones (`init` data), or those whose
  recorded outputs have the lowest target energy (data-nearest), repeated when `num` exceeds the dataset."""
  n = len(dataset)
  if config.init == "data":
    return np.random.default_rng(config.seed).choice(n, config.num, replace=config.num > n)
  return np.resize(np.argsort(recorded_energies(agent, target, dataset), kind="stable"), config.num)


def recorded_energies(agent: Agent, target: Target, dataset: Dataset) -> np.ndarray:
  """The target's energy `(N,)` of every dataset state, from the agent's outputs recorded with it."""
  outputs = {k: np.asarray(dataset[k]) for k in agent.spec.heads}
  return np.asarray(jax.jit(jax.vmap(target.energy))(outputs))


def initial_variables(
  agent: Agent,
  generator: GeneratorBundle | None,
  config: ProbeConfig,
  rows: np.ndarray | None = None,
  dataset: Dataset | None = None,
) -> jnp.ndarray:
  """The seeded start: u from the generator's latent prior (N(0, I) without a fitted one), the
  standardised encodings of `dataset`'s states `rows`, or uniform-noise images (as logits).

  Independent of chunking: `(num, latent_dim)` or `(num, 4, 84, 84)`.
  """
  key = jax.random.key(config.seed)
  if rows is not None:
    mean, std = generator.latent_coordinates()
    unique = np.unique(rows)  # sorted: memory-mapped reads go forward, each state encoded once
    z = encoder_means(generator.spec.network(), generator.variables, np.asarray(dataset["colour"][unique]))
    return jnp.asarray((z[np.searchsorted(unique, rows)] - mean) / std)
  if config.space == "latent":
    return prior.sample(search_prior(generator, config), key, config.num)
  x = jax.random.uniform(key, (config.num, *agent.spec.obs_shape), minval=0.05, maxval=0.95)
  return jnp.log(x) - jnp.log1p(-x)


def probe_target(
  agent: Agent,
  generator: GeneratorBundle | None,
  target: Target,
  config: ProbeConfig,
  sharding=None,
  on_chunk=None,
  dataset: Dataset | None = None,
) -> ProbeResult:
  """The search for one target: `config.num` states from the seeded start, then the agent's reading of them."""
  energy = make_energy(agent, target, config, generator)
  rows = start_rows(agent, target, config, dataset) if config.init != "prior" else None
  v0 = initial_variables(agent, generator, config, rows, dataset)
  t0 = time.perf_counter()
  result = optimise(
    energy, v0, config, jax.random.key(config.seed + 1), sharding=sharding, name=target.name, on_chunk=on_chunk
  )
  seconds = time.perf_counter() - t0 - result.compile_s
  if config.space == "latent":
    render = jax.jit(latent_renderer(generator))
    colour, gray = (np.asarray(a) for a in render(generator.variables, result.v))
    colour = np.round(colour * 255).astype(np.uint8)
  else:
    gray = np.asarray(255.0 * jax.nn.sigmoid(result.v))
    colour = np.repeat(np.round(gray).astype(np.uint8).transpose(0, 2, 3, 1), 3, axis=-1)
  # One program for the heads and the torso's features: XLA computes the shared network once.
  read = jax.jit(lambda params, x: (agent.spec.apply(params, x), agent.spec.features(params, x)))
  outputs, features = jax.device_get(read(agent.params, gray))
  view = np.round(gray).astype(np.uint8)
  return ProbeResult(
    target.name,
    target.reads,
    np.asarray(result.v),
    colour,
    view,
    outputs,
    np.asarray(greedy_actions(agent.spec, outputs)),
    result.energy_start,
    result.energy_end,
    result.curve,
    seconds,
    result.compile_s,
    rows,
    find_modes(features, result.energy_end, seed=config.seed),  # on how the agent reads the states
  )


def probe(
  agent: Agent,
  generator: GeneratorBundle | None,
  targets: Sequence[str],
  config: ProbeConfig,
  progress: bool = True,
  dataset: Dataset | None = None,
) -> list[ProbeResult]:
  """Runs the search for each target name; all states of a target are one (chunked) compiled program.

  `dataset` (states of the agent's game) is needed for starts from data (`config.init`).
  """
  check_inputs(agent, generator, config, dataset)
  resolved = [get_target(t, agent.spec.kind, agent.spec.num_actions, config.tau) for t in targets]
  if not resolved:
    raise UserError("give at least one --target")
  mesh = batch_mesh()
  sharding = batch_sharding(mesh) if mesh.size > 1 and resolve_chunk(config.chunk) % mesh.size == 0 else None
  bar = tqdm(total=config.num * len(resolved), unit="state", desc=f"probe ({config.space})", disable=not progress)
  results = []
  for target in resolved:
    bar.set_postfix(target=target.name)
    results.append(probe_target(agent, generator, target, config, sharding, on_chunk=bar.update, dataset=dataset))
  bar.close()
  return results
