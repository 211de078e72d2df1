"""The latent search as jaxprobe runs it, set up for timing (latent_search.py and scaling.py).

Also the agent (and its input) that every benchmark uses: a random-init Q network of
Seaquest's 18 actions; timings do not depend on what its weights learned.

The energy is jaxprobe's own (`jaxprobe.search.spaces.make_energy`: target of the agent's
outputs on G(z), plus alpha * 0.5 ||z||^2), the step jaxprobe's own
(`jaxprobe.search.optimise.make_step`: Adam, best-so-far tracking, early-stop bookkeeping),
driven the way `optimise` drives it on this backend (`resolve_loop`: a Python loop of the
jitted step on CPU, one `lax.scan` on accelerators). What `optimise` adds around it per call
(building the jitted functions, hence compiling, and scoring the start and the end) is
kept out, so the number is the steady-state throughput; compile time is reported apart.

Weights are random (`random_like`: drawn in the shapes of Flax's init without compiling
it, which takes 5-25 s on 2 cores), the generator in the "transpose" layout so its decoder
maps onto PyTorch's `ConvTranspose2d` with the same weights (torch_models.py); its batch
norm statistics are random too, so the eval-mode batch norms are not the identity.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxprobe.agents.agent import Agent, AgentSpec
from jaxprobe.generator import prior
from jaxprobe.generator.spec import GeneratorBundle, GeneratorSpec
from jaxprobe.parallel import resolve_loop
from jaxprobe.search.optimise import OptimiseConfig, RowState, make_step
from jaxprobe.search.spaces import ProbeConfig, make_energy
from jaxprobe.search.targets import get_target

ENV_ID, NUM_ACTIONS = "Seaquest-v5", 18  # the game of the shipped agent: all 18 actions


def random_like(shapes, seed: int):
  """Random float32 values in the shapes of an init (`jax.eval_shape` of it), scaled so every layer matters.

  Kernels N(0, 1/fan_in), batch norm variances in [0.5, 2] and scales in [0.5, 1.5], the rest
  (biases, means) N(0, 0.1^2).
  """
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = jax.tree_util.keystr(path)
    if name.endswith("['var']"):
      return rng.uniform(0.5, 2.0, leaf.shape).astype(np.float32)
    if name.endswith("['scale']"):
      return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
    scale = 1 / np.sqrt(np.prod(leaf.shape[:-1])) if name.endswith("['kernel']") else 0.1
    return (scale * rng.standard_normal(leaf.shape)).astype(np.float32)

  return jax.tree_util.tree_map_with_path(fill, shapes)


def make_agent(seed: int = 0, num_actions: int = NUM_ACTIONS, env_id: str = ENV_ID) -> Agent:
  spec = AgentSpec("q", num_actions, env_id)
  return Agent(spec, random_like(jax.eval_shape(spec.init, jax.random.key(0)), seed))


def observations(batch: int, seed: int = 0) -> np.ndarray:
  """(batch, 4, 84, 84) random frames in [0, 255] as float32: the agent's input, for the saliency benchmarks."""
  return np.random.default_rng(seed).integers(0, 256, (batch, 4, 84, 84)).astype(np.float32)


def greedy_actions(agent: Agent, obs) -> np.ndarray:
  """Each state's greedy action by our network, for the saliency benchmarks to pass to both sides.

  Computed once: each side reading it from its own forward pass could pick another action
  where two outputs nearly tie, and the two would then explain different things.
  """
  out = jax.jit(agent.spec.apply)(agent.params, obs)[agent.spec.action_head]
  return np.asarray(jnp.argmax(out, axis=-1))


def make_generator(seed: int = 1, upsample: str = "transpose") -> GeneratorBundle:
  spec = GeneratorSpec(upsample=upsample, env_id=ENV_ID)
  return GeneratorBundle(spec, random_like(jax.eval_shape(spec.init, jax.random.key(0)), seed))


def probe_config(
  target: str = "T+-", alpha: float = 0.01, tau: float = 1.0, lr: float = 0.05, loop: str = "auto"
) -> ProbeConfig:
  # The paper's energy, which the PyTorch peer computes: N(0, I) prior, rows independent.
  return ProbeConfig(alpha=alpha, tau=tau, lr=lr, loop=loop, prior="normal", diversity=0.0)


def random_mixture(dim: int = 100, components: int = 16, seed: int = 0) -> prior.GaussianMixture:
  """A latent prior of the size `jaxprobe fit-prior` chose for the Pong generator (16 full-covariance
  components of dimension 100), with random means and Cholesky factors: its cost, not its fit."""
  rng = np.random.default_rng(seed)
  tril = np.tril(0.05 * rng.standard_normal((components, dim, dim)), -1) + np.eye(dim) * rng.uniform(
    0.5, 1.5, (components, 1, 1)
  )
  return prior.GaussianMixture(
    jnp.full(components, -np.log(components), jnp.float32),
    jnp.asarray(rng.standard_normal((components, dim)), jnp.float32),
    jnp.asarray(tril, jnp.float32),
  )


def energy_fn(agent: Agent, bundle: GeneratorBundle, target: str, config: ProbeConfig) -> Callable:
  """jaxprobe's energy `(z, key) -> (n,)` for `target` (T+, T-, T+-, ...)."""
  resolved = get_target(target, agent.spec.kind, agent.spec.num_actions, config.tau)
  return make_energy(agent, resolved, config, bundle)


def initial_state(energy: Callable, optimizer, v: jax.Array, steps: int, key: jax.Array) -> RowState:
  """The state `optimise` starts a chunk from (its `init`, which it does not export)."""
  n = v.shape[0]
  return RowState(
    v,
    optimizer.init(v),
    v,
    energy(v, key),
    jnp.zeros(n, jnp.int32),
    jnp.full(n, steps, jnp.int32),
    jnp.full(n, -1, jnp.int32),
    key,
    jnp.zeros((), jnp.int32),
  )


@dataclasses.dataclass
class SearchRunner:
  """`run()` does `steps` search steps of a batch from the same start, blocking until done."""

  run: Callable[[], object]
  compile_s: float
  flops_per_step: float | None
  loop: str
  temp_bytes: int  # XLA's memory analysis of the compiled step: its temporaries


def compiled_flops(compiled) -> float | None:
  """XLA's own count of a compiled program's floating-point operations (None if it has none).

  A loop body (`lax.map`, `lax.scan`) is counted once, not once per iteration.
  """
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else None
  flops = (analysis or {}).get("flops")
  return float(flops) if flops else None


def search_runner(energy: Callable, v0: jax.Array, steps: int, config: ProbeConfig, key=None) -> SearchRunner:
  """Compiles jaxprobe's search step for `v0` (possibly sharded) and returns a timed runner."""
  optimizer = optax.adam(config.lr)
  step = make_step(energy, OptimiseConfig(steps=steps, lr=config.lr, loop=config.loop), optimizer)
  loop = resolve_loop(config.loop)
  key = jax.random.key(1) if key is None else key
  state0 = jax.block_until_ready(jax.jit(lambda v, k: initial_state(energy, optimizer, v, steps, k))(v0, key))
  t = time.perf_counter()
  step_compiled = jax.jit(step).lower(state0).compile()
  flops = compiled_flops(step_compiled)
  temp_bytes = step_compiled.memory_analysis().temp_size_in_bytes
  if loop == "scan":
    scan = jax.jit(lambda s: jax.lax.scan(lambda c, _: step(c), s, None, length=steps)).lower(state0).compile()
    compile_s = time.perf_counter() - t

    def run():
      return jax.block_until_ready(scan(state0))
  else:
    compile_s = time.perf_counter() - t

    def run():
      s = state0
      for _ in range(steps):
        s, _ = step_compiled(s)
      return jax.block_until_ready(s)

  return SearchRunner(run, compile_s, flops, loop, temp_bytes)


def start_latents(num: int, latent_dim: int = 100, seed: int = 0) -> np.ndarray:
  """z ~ N(0, I), as the probe starts (`initial_variables`), as numpy so both frameworks share it."""
  return np.asarray(jax.random.normal(jax.random.key(seed), (num, latent_dim)))
