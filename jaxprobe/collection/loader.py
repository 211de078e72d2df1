"""Shuffled, device-ready batches from a dataset, gathered in a background thread.

On many hosts (`jaxprobe.hosts`) a batch's sharding spans every process's devices: each process
reads only the rows that land on its own devices, and the global batch is assembled from them.
"""

from __future__ import annotations

import queue
import threading
from typing import Iterator, Sequence

import jax
import numpy as np

from jaxprobe.collection.dataset import Dataset


def batch_indices(num_rows: int, batch_size: int, seed: int, epoch: int) -> np.ndarray:
  """`(num_batches, batch_size)` row indices of one epoch: a seeded permutation, last partial batch dropped.

  Each batch's indices are sorted so reads from memory-mapped files go forward.
  """
  perm = np.random.default_rng([seed, epoch]).permutation(num_rows)
  n = num_rows // batch_size
  return np.sort(perm[: n * batch_size].reshape(n, batch_size), axis=1)


def read_rows(
  dataset: Dataset, idx: np.ndarray, names: Sequence[str], sharding: jax.sharding.Sharding | None
) -> tuple[dict[str, jax.Array], int]:
  """Rows `idx` of arrays `names`, placed with `sharding`, and how many rows this process read.

  A sharding that spans other processes' devices gets from this process only the rows of its own
  devices (`addressable_devices_indices_map`), so no host reads another's part of the batch.
  """
  if sharding is None or sharding.is_fully_addressable:
    host = {k: np.asarray(dataset[k][idx]) for k in names}
    return (jax.device_put(host, sharding) if sharding is not None else jax.device_put(host)), len(idx)
  mine = {device: idx[where[0]] for device, where in sharding.addressable_devices_indices_map((len(idx),)).items()}
  batch = {}
  for k in names:
    parts = [jax.device_put(np.asarray(dataset[k][rows]), device) for device, rows in mine.items()]
    batch[k] = jax.make_array_from_single_device_arrays((len(idx), *parts[0].shape[1:]), sharding, parts)
  return batch, sum(len(rows) for rows in mine.values())


def batches(
  dataset: Dataset,
  batch_size: int,
  seed: int = 0,
  names: Sequence[str] = ("colour", "gray", "mask"),
  start_batch: int = 0,
  prefetch: int = 2,
  sharding: jax.sharding.Sharding | None = None,
  tally: dict | None = None,
) -> Iterator[dict[str, jax.Array]]:
  """Endless batches (epoch after epoch), starting at global batch `start_batch` (for resuming).

  With `sharding`, each batch is placed with it (e.g. split over a mesh's batch axis; `read_rows`).
  `tally`, when given, counts the rows this process has read (`"rows"`) for how many batches
  (`"batches"`, read ahead of the steps by up to `prefetch` + 1).
  """
  if batch_size > len(dataset):
    raise ValueError(f"batch size {batch_size} exceeds the dataset's {len(dataset)} states")
  per_epoch = len(dataset) // batch_size
  out: queue.Queue = queue.Queue(maxsize=prefetch)
  stop = threading.Event()

  def produce():
    b, epoch_indices = start_batch, {}
    try:
      while not stop.is_set():
        epoch, i = divmod(b, per_epoch)
        if epoch not in epoch_indices:
          epoch_indices = {epoch: batch_indices(len(dataset), batch_size, seed, epoch)}
        idx = epoch_indices[epoch][i]
        item, read = read_rows(dataset, idx, names, sharding)
        if tally is not None:
          tally["rows"], tally["batches"] = tally.get("rows", 0) + read, tally.get("batches", 0) + 1
        while not stop.is_set():
          try:
            out.put(item, timeout=0.1)
            break
          except queue.Full:
            continue
        b += 1
    except BaseException as e:  # surfaced to the consumer, not lost in the thread
      out.put(e)

  thread = threading.Thread(target=produce, daemon=True)
  thread.start()
  try:
    while True:
      item = out.get()
      if isinstance(item, BaseException):
        raise item
      yield item
  finally:
    stop.set()
