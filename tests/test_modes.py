"""Weakness modes on hand-made clusters: the count, sizes and representatives are recovered."""

import numpy as np
from scipy import stats

from jaxprobe.search import modes


def blobs(sizes, dim=10, apart=8.0, seed=0):
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(len(sizes), dim)) * apart
  x = np.concatenate([c + rng.normal(size=(n, dim)) for c, n in zip(centres, sizes)])
  return x, np.repeat(np.arange(len(sizes)), sizes)


def one_gaussian_bic(z):
  """BIC of one full-covariance Gaussian (maximum likelihood, plus the floor) fitted to `z` (n, D), by scipy."""
  n, d = z.shape
  cov = np.cov(z, rowvar=False, bias=True) + modes.COVARIANCE_FLOOR * np.eye(d)
  log_lik = stats.multivariate_normal(z.mean(0), cov).logpdf(z).sum()
  return -2 * log_lik + (d + d * (d + 1) / 2) * np.log(n)


def test_three_clusters_are_found_with_their_sizes_and_lowest_energy_states():
  x, truth = blobs([50, 30, 20])
  energy = np.random.default_rng(1).normal(size=len(x))
  m = modes.find_modes(x, energy)
  assert len(m.sizes) == 3 and m.sizes.tolist() == [50, 30, 20]
  for j, t in enumerate([0, 1, 2]):  # mode 0 is the largest cluster, and so on
    members = np.flatnonzero(truth == t)
    np.testing.assert_array_equal(np.flatnonzero(m.labels == j), members)
    assert m.representatives[j] == members[np.argmin(energy[members])]
    assert m.median_energy[j] == np.median(energy[members])
  assert m.summary()["share"] == [0.5, 0.3, 0.2]
  # The criterion, against scipy: one Gaussian in the principal coordinates the modes were chosen in.
  mean, project = modes.principal_coordinates(x)
  assert project.shape == (10, m.dims)
  np.testing.assert_allclose(m.bic[0], one_gaussian_bic((x - mean) @ project), rtol=1e-9)
  assert np.argmin(m.bic) == 2


def test_one_cloud_is_one_mode_and_tiny_batches_do_not_fail():
  x, _ = blobs([200], dim=10)
  m = modes.find_modes(x, np.arange(200.0))
  assert m.sizes.tolist() == [200] and np.argmin(m.bic) == 0 and m.representatives.tolist() == [0]
  two = modes.find_modes(np.zeros((2, 3)), np.array([1.0, 0.0]))
  assert two.sizes.tolist() == [2] and two.representatives.tolist() == [1]
  # Identical states: no structure, no division by zero.
  same = modes.find_modes(np.ones((16, 4)), np.zeros(16))
  assert same.sizes.tolist() == [16]


def test_large_batches_are_clustered_on_a_subset_and_every_state_joins_its_mode(monkeypatch):
  monkeypatch.setattr(modes, "MAX_STATES", 60)
  x, truth = blobs([120, 80])
  m = modes.find_modes(x, np.zeros(200))
  assert m.sizes.tolist() == [120, 80]
  np.testing.assert_array_equal(m.labels, truth)


def test_five_unequal_clusters_are_five_modes_and_the_count_stops_where_parameters_outnumber_states():
  x, truth = blobs([100, 60, 40, 30, 26], dim=512)
  m = modes.find_modes(x, np.zeros(len(x)))
  assert m.sizes.tolist() == [100, 60, 40, 30, 26]
  # 12 states: the mixture is fitted in 2 directions (two 3-dimensional components would have 19
  # parameters), and the count stops where a mixture has as many parameters as there are states.
  small = modes.find_modes(x[:12], np.zeros(12))
  assert small.dims == 2 and np.isfinite(small.bic[:2]).all() and not np.isfinite(small.bic[2:]).any()
