"""Weakness modes: a target's found states grouped into clusters, the number chosen from the data.

A batch of searches that finds one kind of state 200 times and another 56 times should say so,
and show one of each. The states are clustered on the agent's features of them (its torso's
512 outputs, `AgentSpec.features`: states the agent reads alike group together) with k-means for
every k from 2 to `max_modes`; the k with the highest mean silhouette wins, and the batch counts
as one mode when even that silhouette is below 0.25, the level below which Kaufman & Rousseeuw
(1990, "Finding Groups in Data", Section 2.2) find no substantial structure. Each mode's
representative is its lowest-energy state.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

NO_STRUCTURE = 0.25  # mean silhouette below which the states count as one mode
MAX_STATES = 2048  # larger batches are clustered on a seeded subset, the rest joins the nearest mode


class Modes(NamedTuple):
  """The clustering of one target's states, modes ordered by size (largest first)."""

  labels: np.ndarray  # (n,) mode of each state, 0 = the largest
  sizes: np.ndarray  # (k,) states per mode
  representatives: np.ndarray  # (k,) index of each mode's lowest-energy state
  median_energy: np.ndarray  # (k,) median energy of each mode's states
  silhouette: float  # mean silhouette of the chosen clustering (0 for one mode)

  def summary(self) -> dict:
    """The modes as JSON: count, each one's share, representative, median energy, and the silhouette."""
    n = int(self.sizes.sum())
    return dict(
      modes=len(self.sizes),
      share=[round(float(s) / n, 4) for s in self.sizes],
      representatives=self.representatives.tolist(),
      median_energy=[round(float(e), 4) for e in self.median_energy],
      silhouette=round(self.silhouette, 4),
    )


def describe(summary: dict) -> str:
  """'3 (50/30/20)' from `Modes.summary()`: the number of modes and each one's share of the states, in percent."""
  return f"{summary['modes']} ({'/'.join(f'{100 * x:.0f}' for x in summary['share'])})"


def pairwise_distances(x: np.ndarray) -> np.ndarray:
  """Euclidean distances between the rows of `x` `(n, d)`: `(n, n)`."""
  sq = (x * x).sum(1)
  return np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2.0 * x @ x.T, 0.0))


def kmeans(x: np.ndarray, k: int, rng: np.random.Generator, restarts: int = 4, iters: int = 50) -> np.ndarray:
  """Labels `(n,)` of the lowest-inertia of `restarts` runs of Lloyd's k-means, each seeded by k-means++."""
  best, best_inertia = None, np.inf
  for _ in range(restarts):
    centres = x[[rng.integers(len(x))]]
    while len(centres) < k:  # k-means++: the next centre drawn in proportion to squared distance
      d2 = ((x[:, None] - centres[None]) ** 2).sum(-1).min(1)
      total = d2.sum()
      p = d2 / total if total > 0 else None
      centres = np.concatenate([centres, x[[rng.choice(len(x), p=p)]]])
    for _ in range(iters):
      labels = ((x[:, None] - centres[None]) ** 2).sum(-1).argmin(1)
      new = np.stack([x[labels == j].mean(0) if (labels == j).any() else centres[j] for j in range(k)])
      if np.allclose(new, centres):
        break
      centres = new
    inertia = ((x - centres[labels]) ** 2).sum()
    if inertia < best_inertia:
      best, best_inertia = labels, inertia
  return best


def silhouette(distances: np.ndarray, labels: np.ndarray) -> float:
  """Mean silhouette (b - a) / max(a, b) over the states; a state alone in its cluster scores 0.

  a: mean distance to the other states of its cluster; b: the lowest mean distance to another cluster.
  """
  ks = np.unique(labels)
  if len(ks) < 2:
    return 0.0
  member = labels[:, None] == ks[None, :]  # (n, k)
  sums = distances @ member  # (n, k) summed distance to each cluster
  counts = member.sum(0).astype(np.float64)
  own = member.argmax(1)
  n_own = counts[own]
  a = sums[np.arange(len(labels)), own] / np.maximum(n_own - 1, 1)
  other = np.where(member, np.inf, sums / counts)
  b = other.min(1)
  s = np.where(n_own > 1, (b - a) / np.maximum(np.maximum(a, b), 1e-12), 0.0)
  return float(s.mean())


def find_modes(features: np.ndarray, energy: np.ndarray, max_modes: int = 8, seed: int = 0) -> Modes:
  """The modes of `n` states from their features `(n, d)` (the agent's) and energies `(n,)`.

  Above MAX_STATES states, the clustering is chosen on a seeded subset of MAX_STATES (the
  silhouette needs all pairwise distances) and every state joins the mode with the nearest mean.
  """
  x = np.asarray(features, np.float64).reshape(len(features), -1)
  energy = np.asarray(energy, np.float64)
  n = len(x)
  rng = np.random.default_rng(seed)
  subset = np.sort(rng.choice(n, MAX_STATES, replace=False)) if n > MAX_STATES else np.arange(n)
  xs = x[subset]
  labels, score = np.zeros(n, np.int64), 0.0
  if len(xs) >= 3:
    distances = pairwise_distances(xs)
    for k in range(2, min(max_modes, len(xs) - 1) + 1):
      candidate = kmeans(xs, k, rng)
      s = silhouette(distances, candidate)
      if s > score:
        labels, score = candidate, s
    if score < NO_STRUCTURE:
      labels, score = np.zeros(n, np.int64), 0.0
    elif n > len(xs):
      means = np.stack([xs[labels == j].mean(0) for j in np.unique(labels)])
      labels = np.unique(labels)[((x[:, None] - means[None]) ** 2).sum(-1).argmin(1)]
  ks, sizes = np.unique(labels, return_counts=True)
  rank = np.empty(len(ks), np.int64)
  rank[np.argsort(-sizes, kind="stable")] = np.arange(len(ks))
  labels = rank[np.searchsorted(ks, labels)]  # relabelled: 0 = the largest mode
  sizes = np.bincount(labels)
  reps = np.array([np.flatnonzero(labels == j)[np.argmin(energy[labels == j])] for j in range(len(sizes))])
  medians = np.array([np.median(energy[labels == j]) for j in range(len(sizes))])
  return Modes(labels, sizes, reps, medians, score)
