"""A density of the encoder's latents on real states: where the game's states lie in latent space.

At the paper's KL weight the encoder's latents are far from N(0, I), and far from any diagonal
Gaussian: in the standardised coordinates `u` of `GeneratorBundle.latent_coordinates` most of
the variance of real states lies in a few directions. A start drawn from N(0, I) decodes to the
average state. A Gaussian mixture with full covariances, fitted ex post to the latents of the
training states (as Ghosh et al. 2020, "From Variational to Deterministic Autoencoders", do for
deterministic autoencoders), is a model of the states: the search starts from its samples and
its energy's prior term is the mixture's negative log density (docs/search.md, 'Latent prior').

    log p(u) = logsumexp_k [ log w_k + log N(u; mu_k, L_k L_k^T) ]
    log N(u; mu, L L^T) = -0.5 ||L^-1 (u - mu)||^2 - sum_i log L_ii - 0.5 D log(2 pi)

`fit` runs expectation-maximisation; `fit_best` chooses the number of components by the
log-likelihood of held-out latents.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np

COMPONENTS = (1, 2, 4, 8, 16)  # candidates for `fit_best`
COVARIANCE_FLOOR = 1e-3  # added to every covariance's diagonal: no component collapses onto a point


class GaussianMixture(NamedTuple):
  """Weights `(K,)` (as logs), means `(K, D)` and Cholesky factors `(K, D, D)` of the covariances."""

  log_weights: chex.Array
  means: chex.Array
  scale_tril: chex.Array


def standard_normal(dim: int) -> GaussianMixture:
  """N(0, I) as a one-component mixture: the prior a generator without a fitted one has."""
  return GaussianMixture(jnp.zeros(1), jnp.zeros((1, dim)), jnp.eye(dim)[None])


def component_log_densities(mixture: GaussianMixture, u: chex.Array) -> chex.Array:
  """log w_k + log N(u; mu_k, Sigma_k) for one point `u` `(D,)`: `(K,)`."""
  chex.assert_rank(u, 1)
  chex.assert_equal_shape_suffix([mixture.means, u], 1)
  # L_k^-1 (u - mu_k) as one product with the inverse factors: they do not depend on u, so under
  # the search's vmap over rows they are computed once and the rows' whitening is one matrix
  # product (batched triangular solves per row and component are slow on XLA:CPU).
  eye = jnp.eye(u.shape[0], dtype=mixture.scale_tril.dtype)
  inverse = jax.vmap(lambda tril: jax.scipy.linalg.solve_triangular(tril, eye, lower=True))(mixture.scale_tril)
  white = jnp.einsum("kij,j->ki", inverse, u) - jnp.einsum("kij,kj->ki", inverse, mixture.means)  # (K, D)
  log_det = jnp.sum(jnp.log(jnp.diagonal(mixture.scale_tril, axis1=-2, axis2=-1)), axis=-1)
  return mixture.log_weights - 0.5 * jnp.sum(white**2, -1) - log_det - 0.5 * u.shape[0] * jnp.log(2 * jnp.pi)


def log_density(mixture: GaussianMixture, u: chex.Array) -> chex.Array:
  """log p(u) of one point `u` `(D,)`: a scalar."""
  return jax.nn.logsumexp(component_log_densities(mixture, u))


def prior_energy(mixture: GaussianMixture, u: chex.Array) -> chex.Array:
  """-log p(u) - 0.5 D log(2 pi) of one point: for N(0, I) exactly 0.5 ||u||^2, the paper's prior term."""
  return -log_density(mixture, u) - 0.5 * u.shape[0] * jnp.log(2 * jnp.pi)


def sample(mixture: GaussianMixture, key: jax.Array, num: int) -> jax.Array:
  """`num` points `(num, D)` drawn from the mixture."""
  pick, noise = jax.random.split(key)
  k = jax.random.categorical(pick, mixture.log_weights, shape=(num,))
  eps = jax.random.normal(noise, (num, mixture.means.shape[-1]))
  return mixture.means[k] + jnp.einsum("nij,nj->ni", mixture.scale_tril[k], eps)


@functools.partial(jax.jit, static_argnames=("components", "iterations"))
def fit(latents: chex.Array, components: int, key: jax.Array, iterations: int = 100) -> GaussianMixture:
  """A `components`-component mixture fitted to `latents` `(N, D)` by expectation-maximisation.

  Means start at distinct random points, covariances at the data's, weights equal; each
  covariance gets `COVARIANCE_FLOOR` on its diagonal (the data are in standardised coordinates,
  so the floor is small against every direction that carries variance).
  """
  n, d = latents.shape
  floor = COVARIANCE_FLOOR * jnp.eye(d)
  start = jax.random.choice(key, n, (components,), replace=False)
  data_cov = jnp.cov(latents, rowvar=False).reshape(d, d) + floor
  init = GaussianMixture(
    jnp.full(components, -jnp.log(components)),
    latents[start],
    jnp.broadcast_to(jnp.linalg.cholesky(data_cov), (components, d, d)),
  )

  def step(mixture, _):
    log_r = jax.vmap(lambda u: component_log_densities(mixture, u))(latents)  # (N, K)
    r = jnp.exp(log_r - jax.nn.logsumexp(log_r, axis=1, keepdims=True))
    mass = r.sum(0) + 1e-9
    means = (r.T @ latents) / mass[:, None]
    diff = latents[None] - means[:, None]  # (K, N, D)
    cov = jnp.einsum("kn,kni,knj->kij", r.T, diff, diff) / mass[:, None, None] + floor
    return GaussianMixture(jnp.log(mass / n), means, jnp.linalg.cholesky(cov)), None

  mixture, _ = jax.lax.scan(step, init, None, length=iterations)
  return mixture


def mean_log_density(mixture: GaussianMixture, latents: chex.Array) -> float:
  """The mean of log p over points `(N, D)`."""
  return float(jnp.mean(jax.jit(jax.vmap(lambda u: log_density(mixture, u)))(latents)))


def fit_best(
  latents: np.ndarray, key: jax.Array, candidates: Sequence[int] = COMPONENTS, held_out: float = 0.2
) -> tuple[GaussianMixture, dict]:
  """The mixture whose number of components gives held-out latents the highest mean log density.

  A seeded `held_out` share of the points is kept out of fitting to choose the count; the chosen
  count is then fitted on all points. Returns it and `{components: held-out mean log density}`.
  """
  latents = np.asarray(latents, np.float32)
  split, *fit_keys = jax.random.split(key, len(candidates) + 2)
  order = np.asarray(jax.random.permutation(split, len(latents)))
  test, train = latents[order[: int(held_out * len(latents))]], latents[order[int(held_out * len(latents)) :]]
  scores = {}
  for k, fit_key in zip(candidates, fit_keys):
    if k <= len(train):
      scores[k] = mean_log_density(fit(jnp.asarray(train), k, fit_key), jnp.asarray(test))
  best = max(scores, key=scores.get)
  return fit(jnp.asarray(latents), best, fit_keys[-1]), scores
