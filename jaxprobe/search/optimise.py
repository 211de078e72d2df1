"""Thousands of independent state optimisations as one compiled program (docs/search.md, 'Optimiser').

Minimise, for every row i of a batch of variables v_i (latents, or pixels for
the baseline), E_i = target(A(render(v_i))) + regulariser(v_i) with Adam from a
seeded start. Adam follows the gradient of the batch's summed energy: where
each E_i depends on row i only, that is each row's own gradient and one
optimiser over the batch is `num` independent optimisers; a term that couples
the rows (`diversity.repulsion`) acts within a chunk.

Two drivers of the same jitted step: "scan" fuses all steps into one program
(accelerators); "python" calls the jitted step from Python, which on XLA:CPU ran
3.5x faster for convolution input gradients (`benchmarks/loops.py`; docs/cpu.md, section 'Convolution
gradients inside loops'). "auto" picks per backend (`parallel.resolve_loop`). The
batch may be sharded over devices (`sharding`); it is processed in chunks of `chunk`
rows when it does not fit in memory.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxprobe.config import COUNT, NONNEGATIVE, POSITIVE, POSITIVE_INT, Config, option, setting
from jaxprobe.errors import UserError
from jaxprobe.hosts import to_host
from jaxprobe.parallel import resolve_loop
from jaxprobe.stops import check, polled


@dataclasses.dataclass(frozen=True)
class OptimiseConfig(Config):
  """Adam over every row of a batch: how long, how fast, how the steps are driven, when a row stops."""

  steps: int = option(200, "Adam steps", valid=POSITIVE_INT)
  lr: float = option(0.05, "Adam learning rate", valid=POSITIVE)
  chunk: int = option(0, "states per compiled program (0: 4096 on accelerators, 1024 on CPU)", valid=COUNT)
  loop: Literal["auto", "python", "scan"] = option(
    "auto", "drive the steps from Python or fuse them in one lax.scan (auto: per backend)"
  )
  patience: int = option(0, "stop a state after N steps without improvement (0: off)", valid=COUNT)
  min_improvement: float = setting(1e-4, NONNEGATIVE)  # relative improvement that resets `patience`


class RowState(NamedTuple):
  """The optimiser's carry: every row's variables, Adam state, best iterate and stopping counters."""

  v: jax.Array  # (n, ...) current variables
  opt_state: Any
  best_v: jax.Array  # lowest-energy variables seen
  best_energy: jax.Array  # (n,)
  since_best: jax.Array  # steps since the last real improvement
  stopped_at: jax.Array  # step at which the row stopped (early stop), else the number of steps
  first_bad: jax.Array  # first step whose energy was not finite, -1 if none
  key: jax.Array
  step: jax.Array


class Result(NamedTuple):
  """What `optimise` found for every row."""

  v: np.ndarray  # (num, ...) best variables per row
  energy_start: np.ndarray  # (num,)
  energy_end: np.ndarray  # (num,) energy of `v`
  curve: np.ndarray  # (steps,) mean energy over rows, per step
  stopped_at: np.ndarray  # (num,) step at which a row stopped improving (steps if never)
  compile_s: float = 0.0  # seconds spent compiling, apart from running (throughputs exclude it)


def resolve_chunk(chunk: int) -> int:
  """Rows per compiled program; 0 picks 4096 on accelerators and 1024 on CPU.

  On CPU a 4096-row step of the paper's generator aborted XLA:CPU (std::bad_alloc, 12.7 GB
  resident on a 24 GB machine), while 1024 rows run as fast per row as 256 (benchmarks/README.md).
  """
  return chunk or (1024 if jax.default_backend() == "cpu" else 4096)


class NonFiniteEnergy(UserError):
  """A row's energy became NaN or infinite: the message names the target, the step and the row."""


def _rows(mask: jax.Array, like: jax.Array) -> jax.Array:
  return mask.reshape(mask.shape + (1,) * (like.ndim - 1))


def make_step(energy_fn: Callable, config: OptimiseConfig, optimizer: optax.GradientTransformation):
  """One Adam step of every row; `energy_fn(v, key) -> (n,)` energies (the key drives e.g. jitter)."""

  def step(state: RowState) -> tuple[RowState, jax.Array]:
    key, sub = jax.random.split(state.key)
    energy, vjp = jax.vjp(lambda v: energy_fn(v, sub), state.v)
    grads = vjp(jnp.ones_like(energy))[0]  # the gradient of the batch's summed energy
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
    new = RowState(
      v,
      opt_state,
      jnp.where(_rows(better, state.v), state.v, state.best_v),
      jnp.where(better, energy, state.best_energy),
      since_best,
      stopped_at,
      first_bad,
      key,
      state.step + 1,
    )
    return new, jnp.mean(jnp.where(finite, energy, 0.0))

  return step


def optimise(
  energy_fn: Callable,
  v0: jax.Array,
  config: OptimiseConfig,
  key: jax.Array,
  sharding: jax.sharding.Sharding | None = None,
  name: str = "target",
  on_chunk: Callable[[int], None] | None = None,
) -> Result:
  """Minimises `energy_fn(v, key) -> (n,)` row by row from `v0` `(num, ...)`.

  The rows run in chunks of `resolve_chunk(config.chunk)`, each placed with `sharding`;
  each program is compiled ahead of time, so `Result.compile_s` is timed apart from the
  search. `on_chunk(rows)` is called after each chunk (a progress bar).
  """
  optimizer = optax.adam(config.lr)
  step = make_step(energy_fn, config, optimizer)
  chunk = resolve_chunk(config.chunk)

  def init(v, key):
    e = energy_fn(v, key)
    n = v.shape[0]
    return RowState(
      v,
      optimizer.init(v),
      v,
      e,
      jnp.zeros(n, jnp.int32),
      jnp.full(n, config.steps, jnp.int32),
      jnp.full(n, -1, jnp.int32),
      key,
      jnp.zeros((), jnp.int32),
    ), e

  def finish(state):
    # The last step's update is scored too, so `best` covers every iterate.
    e_last = energy_fn(state.v, state.key)
    better = e_last < state.best_energy
    return jnp.where(_rows(better, state.v), state.v, state.best_v), jnp.where(better, e_last, state.best_energy)

  scan = resolve_loop(config.loop) == "scan"
  run_all = lambda state: jax.lax.scan(lambda c, _: step(c), state, None, length=config.steps)
  # Each program is compiled ahead of time, so compilation is timed apart from the search, once
  # per input signature as jit itself would: a chunk size, or the placement of the step's state
  # (its first call may get a state placed otherwise than the steps after it).
  programs: dict[tuple, Any] = {}
  compile_s = 0.0

  def compiled(name, fn, *args):
    nonlocal compile_s
    signature = (name, *((a.shape, a.dtype, getattr(a, "sharding", None)) for a in jax.tree.leaves(args)))
    if signature not in programs:
      t = time.perf_counter()
      programs[signature] = jax.jit(fn).lower(*args).compile()
      compile_s += time.perf_counter() - t
    return programs[signature](*args)

  parts = []
  with polled():  # a stop takes effect between two steps (a scan: two chunks)
    for c, start in enumerate(range(0, v0.shape[0], chunk)):
      v = v0[start : start + chunk]
      if sharding is not None:
        v = jax.device_put(v, sharding)
      state, e0 = compiled("init", init, v, jax.random.fold_in(key, c))
      if scan:
        state, curve = compiled("scan", run_all, state)
      else:
        curve = []
        for _ in range(config.steps):
          state, mean_energy = compiled("step", step, state)
          curve.append(mean_energy)
          check()
      best_v, best_e = compiled("finish", finish, state)
      bad = to_host(state.first_bad)
      if (bad >= 0).any():
        row = int(np.argmax(bad >= 0))
        raise NonFiniteEnergy(
          f"the energy of target {name} became non-finite at step {int(bad[row])} for "
          f"state {start + row}; lower the learning rate or check the target function"
        )
      # On several hosts the rows are spread over them: each process gets every row back.
      parts.append(Result(to_host(best_v), to_host(e0), to_host(best_e), np.asarray(curve), to_host(state.stopped_at)))
      if on_chunk is not None:
        on_chunk(len(v))
      check()
  rows = np.array([len(r.v) for r in parts], np.float64)
  curve = sum(r.curve * w for r, w in zip(parts, rows)) / rows.sum()
  return Result(
    *(np.concatenate([getattr(r, f) for r in parts]) for f in ("v", "energy_start", "energy_end")),
    curve=curve,
    stopped_at=np.concatenate([r.stopped_at for r in parts]),
    compile_s=compile_s,
  )
