"""Meshes and shardings: batches split over a "batch" axis of every device, everything else replicated.

The same code runs on one CPU, several virtual CPUs (`JAX_NUM_CPU_DEVICES=8`), a GPU or a
TPU slice. Multi-host: call `jax.distributed.initialize()` first; `jax.devices()` then spans
all hosts and so does the mesh.
"""
from __future__ import annotations

import jax
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P


def batch_mesh(num_devices: int | None = None) -> Mesh:
  # Auto axes: XLA propagates shardings through reshapes (space-to-depth etc.) by itself.
  n = num_devices or jax.device_count()
  return jax.make_mesh((n,), ("batch",), axis_types=(AxisType.Auto,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P("batch"))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())
