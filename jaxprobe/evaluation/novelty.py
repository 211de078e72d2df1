"""Novelty and retrieval of synthesized states against the agent's real states.

docs/evaluation.md, sections 'Novelty and retrieval' and 'Spread'.

Both compare the agent's view `(4, 84, 84)`: it is what the agent acts on, and
the pixel-space baseline has no colour, so latent and pixel states are measured
alike. Nearest neighbours are found on device in chunks of the dataset (a
matrix product per chunk, keeping each query's `k` best candidates), then the
candidates are re-ranked exactly on the host, so the result equals a brute-force
search.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

DIFFERENT_ABOVE = 0.25  # a pixel differs if some frame differs by more than 25% of the 0-255 range
BUCKETS = np.linspace(0.0, 1.0, 11)  # histogram of the fraction of differing pixels, 10% wide


class Novelty(NamedTuple):
  """How far each synthesized state lies from the nearest real state."""

  nearest: np.ndarray  # (M,) index of the nearest real state (MSE)
  mse: np.ndarray  # (M,) its mean squared error, in [0, 1] units
  fraction_different: np.ndarray  # (M,) fraction of pixels that differ from it
  histogram: np.ndarray  # (10,) states per 10% bucket of fraction_different

  def summary(self) -> dict:
    """Means and the histogram, as plain JSON data."""
    return dict(
      mean_fraction_different=float(self.fraction_different.mean()),
      mean_mse=float(self.mse.mean()),
      histogram=self.histogram.tolist(),
      buckets=[f"{int(a * 100)}-{int(b * 100)}%" for a, b in zip(BUCKETS[:-1], BUCKETS[1:])],
    )


@functools.partial(jax.jit, static_argnums=3)
def _chunk_candidates(queries: jax.Array, q_norms: jax.Array, chunk: jax.Array, k: int = 8):
  c = chunk.astype(jnp.float32).reshape(chunk.shape[0], -1) / 255.0
  d = q_norms[:, None] + jnp.sum(c * c, axis=1)[None, :] - 2.0 * queries @ c.T
  neg, idx = jax.lax.top_k(-d, min(k, c.shape[0]))
  return -neg, idx


def nearest_states(
  queries: np.ndarray, reference: np.ndarray, chunk: int = 2048, k: int = 8
) -> tuple[np.ndarray, np.ndarray]:
  """Index and MSE of each query's nearest reference state; `(M, ...)` and `(N, ...)` uint8 arrays."""
  q = jnp.asarray(queries, jnp.float32).reshape(len(queries), -1) / 255.0
  q_norms = jnp.sum(q * q, axis=1)
  best_d, best_i = [], []
  for start in range(0, len(reference), chunk):
    d, i = _chunk_candidates(q, q_norms, jnp.asarray(np.asarray(reference[start : start + chunk])), k)
    best_d.append(np.asarray(d))
    best_i.append(np.asarray(i) + start)
  candidates = np.concatenate(best_i, axis=1)
  approx = np.concatenate(best_d, axis=1)
  keep = np.argsort(approx, axis=1)[:, :k]
  candidates = np.take_along_axis(candidates, keep, axis=1)
  # Exact re-ranking in float64: immune to the cancellation in ||a||^2 + ||b||^2 - 2ab.
  qf = np.asarray(queries, np.float64).reshape(len(queries), -1) / 255.0
  exact = np.stack(
    [
      ((np.asarray(reference[c], np.float64).reshape(len(c), -1) / 255.0 - qf[m]) ** 2).mean(1)
      for m, c in enumerate(candidates)
    ]
  )
  pick = np.argmin(exact, axis=1)
  return candidates[np.arange(len(queries)), pick], exact[np.arange(len(queries)), pick]


def fraction_different(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Per pair of `(4, H, W)` uint8 states: the share of pixels where some frame differs by > 25%."""
  diff = np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)) > DIFFERENT_ABOVE * 255
  return diff.any(axis=1).reshape(len(a), -1).mean(axis=1)


def novelty(states: np.ndarray, reference: np.ndarray) -> Novelty:
  """Each state's nearest reference state, its MSE and share of differing pixels, and their histogram."""
  nearest, mse = nearest_states(states, reference)
  frac = fraction_different(states, np.asarray(reference[nearest]))
  hist, _ = np.histogram(frac, bins=BUCKETS)
  return Novelty(nearest, mse, frac, hist)


def nearest_by_energy(state_energy: np.ndarray, reference_energy: np.ndarray, k: int = 1) -> np.ndarray:
  """For each state, the `k` real states whose target energy is closest to its own: `(M, k)` indices."""
  gap = np.abs(np.asarray(reference_energy)[None, :] - np.asarray(state_energy)[:, None])
  return np.argsort(gap, axis=1, kind="stable")[:, :k]


def spread(states: np.ndarray, max_states: int = 64, seed: int = 0) -> float:
  """Mean squared difference between two of `states` (agent views, 0-255) in [0, 1] units.

  Over every pair of up to `max_states` of them (drawn with `seed`): near 0 when a search
  has collapsed onto one state; compare it with the same number for real states.
  """
  n = len(states)
  if n < 2:
    return 0.0
  rows = np.random.default_rng(seed).choice(n, min(n, max_states), replace=False)
  x = np.asarray(states[np.sort(rows)], np.float64).reshape(len(rows), -1) / 255.0
  sq = (x**2).sum(1)
  pair = (sq[:, None] + sq[None, :] - 2.0 * x @ x.T) / x.shape[1]
  return float(max(pair[np.triu_indices(len(x), 1)].mean(), 0.0))
