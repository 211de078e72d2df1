"""Shuffled, device-ready batches from a dataset, gathered in a background thread."""

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


def batches(
  dataset: Dataset,
  batch_size: int,
  seed: int = 0,
  names: Sequence[str] = ("colour", "gray", "mask"),
  start_batch: int = 0,
  prefetch: int = 2,
  sharding: jax.sharding.Sharding | None = None,
) -> Iterator[dict[str, jax.Array]]:
  """Endless batches (epoch after epoch), starting at global batch `start_batch` (for resuming).

  With `sharding`, each batch is placed with it (e.g. split over a mesh's batch axis).
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
        host = {k: np.asarray(dataset[k][idx]) for k in names}
        item = jax.device_put(host, sharding) if sharding is not None else jax.device_put(host)
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
