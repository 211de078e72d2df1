"""Weakness modes: a target's found states grouped into clusters, the number chosen from the data.

A batch of searches that finds one kind of state 200 times and another 56 times should say so,
and show one of each. The states are described by the agent's features of them (its torso's 512
outputs, `AgentSpec.features`: states the agent reads alike group together), projected on their
leading principal directions (the fewest that hold 90% of the variance, at most `MAX_DIMS` and
few enough that two components have fewer parameters than there are states) and
scaled to unit variance along each. A Gaussian mixture with full covariances is fitted there for
every k from 1 to `max_modes` (expectation-maximisation started from k-means), and the k with the
lowest Bayesian information criterion (Schwarz 1978, "Estimating the dimension of a model") wins:

    BIC(k) = -2 sum_i log p_k(z_i) + m_k log n,    m_k = (k - 1) + k D + k D (D + 1) / 2

so a further mode is kept only when the likelihood it adds pays for its parameters, and one mode
wins when the states show no structure. Each state joins its most probable component; each
mode's representative is its lowest-energy state.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

MAX_DIMS = 8  # principal directions the mixture is fitted in, at most
VARIANCE_KEPT = 0.9  # the fewest directions holding this share of the variance
COVARIANCE_FLOOR = 1e-3  # on each component's diagonal, in unit-variance coordinates: no collapse onto a point
MAX_STATES = 2048  # larger batches are clustered on a seeded subset, then every state joins its component


class Modes(NamedTuple):
  """The clustering of one target's states, modes ordered by size (largest first)."""

  labels: np.ndarray  # (n,) mode of each state, 0 = the largest
  sizes: np.ndarray  # (k,) states per mode
  representatives: np.ndarray  # (k,) index of each mode's lowest-energy state
  median_energy: np.ndarray  # (k,) median energy of each mode's states
  bic: np.ndarray  # (max_modes,) BIC of 1, 2, ... components (inf where k had too few states)
  dims: int  # principal directions the mixture was fitted in

  def summary(self) -> dict:
    """The modes as JSON: count, each one's share, representative, median energy, and the BIC of each k."""
    n = int(self.sizes.sum())
    return dict(
      modes=len(self.sizes),
      share=[round(float(s) / n, 4) for s in self.sizes],
      representatives=self.representatives.tolist(),
      median_energy=[round(float(e), 4) for e in self.median_energy],
      bic=[round(float(b), 1) if np.isfinite(b) else None for b in self.bic],
      dims=self.dims,
    )


def describe(summary: dict) -> str:
  """'3 (50/30/20)' from `Modes.summary()`: the number of modes and each one's share of the states, in percent."""
  return f"{summary['modes']} ({'/'.join(f'{100 * x:.0f}' for x in summary['share'])})"


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


class Mixture(NamedTuple):
  """A Gaussian mixture: weights `(k,)`, means `(k, D)`, covariances `(k, D, D)`."""

  weights: np.ndarray
  means: np.ndarray
  covariances: np.ndarray


def component_log_densities(mixture: Mixture, z: np.ndarray) -> np.ndarray:
  """log w_j + log N(z_i; mu_j, Sigma_j) for points `(n, D)`: `(n, k)`."""
  d = z.shape[1]
  columns = []
  for w, mu, cov in zip(*mixture):
    tril = np.linalg.cholesky(cov)
    white = np.linalg.solve(tril, (z - mu).T)  # (D, n)
    log_det = np.log(np.diag(tril)).sum()
    columns.append(np.log(max(w, 1e-300)) - 0.5 * (white**2).sum(0) - log_det - 0.5 * d * np.log(2 * np.pi))
  return np.stack(columns, 1)


def fit_mixture(z: np.ndarray, labels: np.ndarray, k: int, iters: int = 200) -> tuple[Mixture, float]:
  """A `k`-component mixture fitted to `z` `(n, D)` by EM from the hard assignment `labels`; its log-likelihood."""
  n, d = z.shape
  r = np.eye(k)[labels]  # responsibilities (n, k)
  previous = -np.inf
  for _ in range(iters):
    mass = r.sum(0) + 1e-12
    means = (r.T @ z) / mass[:, None]
    diff = z[None] - means[:, None]  # (k, n, D)
    cov = np.einsum("nk,kni,knj->kij", r, diff, diff) / mass[:, None, None] + COVARIANCE_FLOOR * np.eye(d)
    mixture = Mixture(mass / n, means, cov)
    log_p = component_log_densities(mixture, z)
    top = log_p.max(1, keepdims=True)
    log_lik = top[:, 0] + np.log(np.exp(log_p - top).sum(1))  # (n,) log p(z_i)
    r = np.exp(log_p - log_lik[:, None])
    total = float(log_lik.sum())
    if total - previous < 1e-8 * n:
      break
    previous = total
  return mixture, total


def parameter_count(k: int, d: int) -> int:
  """Free parameters of a k-component, D-dimensional full-covariance mixture."""
  return (k - 1) + k * d + k * d * (d + 1) // 2


def principal_coordinates(x: np.ndarray, max_dims: int = MAX_DIMS) -> tuple[np.ndarray, np.ndarray]:
  """Mean `(d,)` and projection `(d, D)` onto the leading principal directions, scaled to unit variance.

  D is also kept small enough that two components have fewer parameters than there are states.
  """
  mean = x.mean(0)
  _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
  variance = s**2 / len(x)
  share = np.cumsum(variance) / max(variance.sum(), 1e-300)
  fits_two = max(d for d in range(1, max_dims + 1) if d == 1 or parameter_count(2, d) < len(x))
  dims = min(int(np.searchsorted(share, VARIANCE_KEPT) + 1), fits_two, int((variance > 1e-12 * variance[0]).sum()))
  return mean, vt[:dims].T / np.sqrt(variance[:dims])


def find_modes(
  features: np.ndarray, energy: np.ndarray, max_modes: int = 8, seed: int = 0, max_dims: int = MAX_DIMS
) -> Modes:
  """The modes of `n` states from their features `(n, d)` (the agent's) and energies `(n,)`.

  Above MAX_STATES states, the mixture is chosen and fitted on a seeded subset of MAX_STATES and
  every state then joins its most probable component.
  """
  x = np.asarray(features, np.float64).reshape(len(features), -1)
  energy = np.asarray(energy, np.float64)
  n = len(x)
  rng = np.random.default_rng(seed)
  subset = np.sort(rng.choice(n, MAX_STATES, replace=False)) if n > MAX_STATES else np.arange(n)
  bic = np.full(max_modes, np.inf)
  labels, dims = np.zeros(n, np.int64), 0
  if len(subset) >= 3 and np.ptp(x[subset], axis=0).max() > 0:
    mean, project = principal_coordinates(x[subset], max_dims)
    z, dims = (x[subset] - mean) @ project, project.shape[1]
    best = None
    for k in range(1, max_modes + 1):
      if parameter_count(k, dims) >= len(z) or k > len(z):
        break  # more parameters than states: the criterion means nothing
      mixture, log_lik = fit_mixture(z, kmeans(z, k, rng) if k > 1 else np.zeros(len(z), np.int64), k)
      bic[k - 1] = -2.0 * log_lik + parameter_count(k, dims) * np.log(len(z))
      if bic[k - 1] == bic.min():
        best = mixture
    if best is not None:
      labels = component_log_densities(best, (x - mean) @ project).argmax(1)
  ks, sizes = np.unique(labels, return_counts=True)
  rank = np.empty(len(ks), np.int64)
  rank[np.argsort(-sizes, kind="stable")] = np.arange(len(ks))
  labels = rank[np.searchsorted(ks, labels)]  # relabelled: 0 = the largest mode
  sizes = np.bincount(labels)
  reps = np.array([np.flatnonzero(labels == j)[np.argmin(energy[labels == j])] for j in range(len(sizes))])
  medians = np.array([np.median(energy[labels == j]) for j in range(len(sizes))])
  return Modes(labels, sizes, reps, medians, bic, dims)
