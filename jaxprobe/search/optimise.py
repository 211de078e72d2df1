"""Thousands of independent state optimisations as one compiled program (METHOD.md 4).

Minimise, for every row i of a batch of variables v_i (latents, or pixels for
the baseline), E_i = target(A(render(v_i))) + regulariser(v_i) with Adam from a
seeded start. Rows never interact: the gradient of the batch's summed energy is
each row's own gradient, and Adam's update is elementwise, so one optimiser over
the batch is `num` independent optimisers.

Two drivers of the same jitted step: "scan" fuses all steps into one program
(accelerators); "python" calls the jitted step from Python, which on XLA:CPU ran
1.8x faster for convolution input gradients (shared/CPU-FACTS.md). "auto" picks
per backend. The batch may be sharded over devices (`sharding`); it is processed
in chunks of `chunk` rows when it does not fit in memory.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxprobe.errors import UserError


@dataclasses.dataclass(frozen=True)
class OptimiseConfig:
  steps: int = 200
  lr: float = 0.05
  chunk: int = 0                     # rows per compiled program (0: resolve_chunk's default)
  loop: Literal["auto", "python", "scan"] = "auto"
  patience: int = 0                  # stop a row after this many steps without improvement (0: never)
  min_improvement: float = 1e-4


class RowState(NamedTuple):
  v: jax.Array            # (n, ...) current variables
  opt_state: Any
  best_v: jax.Array       # lowest-energy variables seen
  best_energy: jax.Array  # (n,)
  since_best: jax.Array   # steps since the last real improvement
  stopped_at: jax.Array   # step at which the row stopped (early stop), else the number of steps
  first_bad: jax.Array    # first step whose energy was not finite, -1 if none
  key: jax.Array
  step: jax.Array


class Result(NamedTuple):
  v: np.ndarray             # (num, ...) best variables per row
  energy_start: np.ndarray  # (num,)
  energy_end: np.ndarray    # (num,) energy of `v`
  curve: np.ndarray         # (steps,) mean energy over rows, per step
  stopped_at: np.ndarray    # (num,) step at which a row stopped improving (steps if never)
  compile_s: float = 0.0    # seconds spent compiling, apart from running (throughputs exclude it)


def resolve_loop(loop: str) -> str:
  return ("python" if jax.default_backend() == "cpu" else "scan") if loop == "auto" else loop


def resolve_chunk(chunk: int) -> int:
  """Rows per compiled program; 0 picks 4096 on accelerators and 1024 on CPU.

  On CPU a 4096-row step of the paper's generator aborted XLA:CPU (std::bad_alloc, 12.7 GB
  resident on a 24 GB machine), while 1024 rows run as fast per row as 256 (benchmarks/README.md).
  """
  if chunk < 0:
    raise UserError(f"--chunk must be positive (or 0 for the default), got {chunk}")
  return chunk or (1024 if jax.default_backend() == "cpu" else 4096)


class NonFiniteEnergy(UserError):
  pass


def _rows(mask: jax.Array, like: jax.Array) -> jax.Array:
  return mask.reshape(mask.shape + (1,) * (like.ndim - 1))


def make_step(energy_fn: Callable, config: OptimiseConfig, optimizer: optax.GradientTransformation):
  """One Adam step of every row; `energy_fn(v, key) -> (n,)` energies (the key drives e.g. jitter)."""

  def step(state: RowState) -> tuple[RowState, jax.Array]:
    key, sub = jax.random.split(state.key)
    energy, vjp = jax.vjp(lambda v: energy_fn(v, sub), state.v)
    grads = vjp(jnp.ones_like(energy))[0]  # each row's own gradient: rows are independent
    finite = jnp.isfinite(energy)
    first_bad = jnp.where((state.first_bad < 0) & ~finite, state.step, state.first_bad)
    better = energy < state.best_energy
    improved = energy < state.best_energy - config.min_improvement * jnp.abs(state.best_energy)
    since_best = jnp.where(improved, 0, state.since_best + 1)
    running = state.stopped_at > state.step
    if config.patience > 0:
      running &= since_best < config.patience
    stopped_at = jnp.where((state.stopped_at > state.step) & ~running, state.step, state.stopped_at)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.v)
    v = jnp.where(_rows(running & finite, state.v), optax.apply_updates(state.v, updates), state.v)
    new = RowState(v, opt_state, jnp.where(_rows(better, state.v), state.v, state.best_v),
                   jnp.where(better, energy, state.best_energy), since_best, stopped_at, first_bad, key,
                   state.step + 1)
    return new, jnp.mean(jnp.where(finite, energy, 0.0))

  return step


def optimise(energy_fn: Callable, v0: jax.Array, config: OptimiseConfig, key: jax.Array,
             sharding: jax.sharding.Sharding | None = None, name: str = "target",
             on_chunk: Callable[[int], None] | None = None) -> Result:
  """Minimises `energy_fn(v, key) -> (n,)` row by row from `v0` `(num, ...)`."""
  if config.steps <= 0:
    raise UserError(f"--steps must be positive, got {config.steps}")
  optimizer = optax.adam(config.lr)
  step = make_step(energy_fn, config, optimizer)
  loop, chunk = resolve_loop(config.loop), resolve_chunk(config.chunk)

  def init(v, key):
    e = energy_fn(v, key)
    n = v.shape[0]
    return RowState(v, optimizer.init(v), v, e, jnp.zeros(n, jnp.int32), jnp.full(n, config.steps, jnp.int32),
                    jnp.full(n, -1, jnp.int32), key, jnp.zeros((), jnp.int32)), e

  # Compiled ahead of time, once per chunk shape, so compilation is timed apart from the search.
  compiled, compile_s = {}, 0.0

  def aot(name, fn, *args):
    nonlocal compile_s
    # As jit's own cache: a new shape, dtype or placement (sharding) is a new program.
    key = (name, *((a.shape, str(a.dtype), getattr(a, "sharding", None)) for a in jax.tree.leaves(args)))
    if key not in compiled:
      t = time.perf_counter()
      compiled[key] = jax.jit(fn).lower(*args).compile()
      compile_s += time.perf_counter() - t
    return compiled[key](*args)

  def run_jit(s):
    if loop == "scan":
      return aot("scan", lambda s: jax.lax.scan(lambda c, _: step(c), s, None, length=config.steps), s)
    curve = []
    for _ in range(config.steps):
      s, m = aot("step", step, s)
      curve.append(m)
    return s, jnp.stack(curve)
  outs = []
  for c, start in enumerate(range(0, v0.shape[0], chunk)):
    v = v0[start:start + chunk]
    if sharding is not None:
      v = jax.device_put(v, sharding)
    chunk_key = jax.random.fold_in(key, c)
    state, e0 = aot("init", init, v, chunk_key)
    state, curve = run_jit(state)
    # The last step's update is scored too, so `best` covers every iterate.
    e_last = aot("energy", energy_fn, state.v, state.key)
    better = e_last < state.best_energy
    best_v, best_e = jnp.where(_rows(better, v), state.v, state.best_v), jnp.where(better, e_last, state.best_energy)
    bad = np.asarray(state.first_bad)
    if (bad >= 0).any():
      row = int(np.argmax(bad >= 0))
      raise NonFiniteEnergy(f"the energy of target {name} became non-finite at step {int(bad[row])} for "
                            f"state {start + row}; lower the learning rate or check the target function")
    outs.append((np.asarray(best_v), np.asarray(e0), np.asarray(best_e), np.asarray(curve),
                 np.asarray(state.stopped_at)))
    if on_chunk is not None:
      on_chunk(len(v))
  n_rows = np.array([len(o[1]) for o in outs], np.float64)
  curve = sum(o[3] * w for o, w in zip(outs, n_rows)) / n_rows.sum()
  return Result(np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs]),
                np.concatenate([o[2] for o in outs]), curve, np.concatenate([o[4] for o in outs]), compile_s)
