"""Meshes, shardings and per-backend loop drivers.

Batches are split over a "batch" axis of every device, everything else replicated.

The same code runs on one CPU, several virtual CPUs (`JAX_NUM_CPU_DEVICES=8`), a GPU or a
TPU slice. Multi-host: call `jax.distributed.initialize()` first; `jax.devices()` then spans
all hosts and so does the mesh.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P


def batch_mesh(num_devices: int | None = None) -> Mesh:
  """A 1-D mesh named "batch" over `num_devices` (default: every device)."""
  # Auto axes: XLA propagates shardings through reshapes (space-to-depth etc.) by itself.
  n = num_devices or jax.device_count()
  return jax.make_mesh((n,), ("batch",), axis_types=(AxisType.Auto,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading axis split over the mesh's "batch" axis."""
  return NamedSharding(mesh, P("batch"))


def replicated(mesh: Mesh) -> NamedSharding:
  """A full copy on every device of the mesh."""
  return NamedSharding(mesh, P())


def is_prng_key(x: Any) -> bool:
  """Whether `x` is an array of typed PRNG keys (`jax.random.key`)."""
  return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def replicate(tree: Any, mesh: Mesh) -> Any:
  """A full copy of `tree` on every device of `mesh`, placed from the host.

  On many hosts every process holds the same values and places its own devices' copies (JAX's
  `device_put` takes host arrays there, not arrays already on a device); PRNG keys travel as
  their raw data.
  """
  sharding = replicated(mesh)

  def put(x):
    if is_prng_key(x):
      data = jax.device_put(np.asarray(jax.random.key_data(x)), sharding)
      return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
    return jax.device_put(np.asarray(x), sharding)

  return jax.tree.map(put, tree)


def resolve_loop(loop: str) -> str:
  """How a loop of jitted steps is driven: "auto" -> "python" on CPU, "scan" on accelerators.

  "python" calls one jitted step from a Python loop; "scan" fuses every step into one
  `lax.scan`. XLA:CPU runs convolution gradients inside loops much slower than outside
  (docs/cpu.md, section 'Convolution gradients inside loops'); accelerators gain from fusion.
  """
  if loop not in ("auto", "python", "scan"):
    raise ValueError(f"loop must be auto, python or scan, got {loop!r}")
  return ("python" if jax.default_backend() == "cpu" else "scan") if loop == "auto" else loop


def map_in_batches(fn: Callable[..., Any], *arrays: np.ndarray, batch_size: int) -> Any:
  """`fn` over `arrays` in batches of exactly `batch_size` rows, outputs concatenated on the host.

  The last batch is padded with copies of its last row (and the padding dropped from the
  outputs), so a jitted `fn` compiles once and memory stays bounded. `fn` returns a pytree
  of arrays whose leading axis is the batch.
  """
  n = len(arrays[0])
  parts = []
  for start in range(0, n, batch_size):
    rows = [np.asarray(a[start : start + batch_size]) for a in arrays]
    pad = batch_size - len(rows[0])
    if pad:
      rows = [np.concatenate([r, np.repeat(r[-1:], pad, 0)]) for r in rows]
    out = jax.device_get(fn(*rows))
    parts.append(jax.tree_util.tree_map(lambda x: x[: batch_size - pad], out))
  return jax.tree_util.tree_map(lambda *xs: np.concatenate(xs), *parts)
