"""Weakness modes on hand-made clusters: the count, sizes and representatives are recovered."""

import numpy as np

from jaxprobe.search import modes


def blobs(sizes, dim=10, apart=8.0, seed=0):
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(len(sizes), dim)) * apart
  x = np.concatenate([c + rng.normal(size=(n, dim)) for c, n in zip(centres, sizes)])
  return x, np.repeat(np.arange(len(sizes)), sizes)


def np_silhouette(x, labels):
  """Kaufman & Rousseeuw's silhouette, state by state."""
  scores = []
  for i in range(len(x)):
    d = np.linalg.norm(x - x[i], axis=1)
    own = labels == labels[i]
    if own.sum() == 1:
      scores.append(0.0)
      continue
    a = d[own].sum() / (own.sum() - 1)
    b = min(d[labels == k].mean() for k in np.unique(labels) if k != labels[i])
    scores.append((b - a) / max(a, b))
  return np.mean(scores)


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
  np.testing.assert_allclose(m.silhouette, np_silhouette(x, truth), rtol=1e-9)
  assert m.summary()["share"] == [0.5, 0.3, 0.2]


def test_one_cloud_is_one_mode_and_tiny_batches_do_not_fail():
  x, _ = blobs([200], dim=10)
  m = modes.find_modes(x, np.arange(200.0))
  assert m.sizes.tolist() == [200] and m.silhouette == 0.0 and m.representatives.tolist() == [0]
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
