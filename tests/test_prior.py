"""The latent prior: log density against scipy, samples against the mixture's moments, EM on known clusters."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from test_probe import tiny_generator

from jaxprobe.agents import Agent
from jaxprobe.cli import main
from jaxprobe.collection import objects
from jaxprobe.collection.dataset import open_dataset
from jaxprobe.collection.recorder import collect
from jaxprobe.generator import prior
from jaxprobe.generator.spec import load_generator, save_generator
from jaxprobe.generator.train import fit_latent_prior
from jaxprobe.search.spaces import ProbeConfig, initial_variables, make_energy
from jaxprobe.search.targets import get_target


def hand_made(d=3):
  rng = np.random.default_rng(0)
  means = np.array([[-4.0] * d, [0.0] * d, [5.0] + [1.0] * (d - 1)], np.float32)
  a = rng.normal(size=(3, d, d)).astype(np.float32) * 0.4
  covs = a @ a.transpose(0, 2, 1) + 0.2 * np.eye(d, dtype=np.float32)
  weights = np.array([0.2, 0.5, 0.3], np.float32)
  mixture = prior.GaussianMixture(jnp.log(weights), jnp.asarray(means), jnp.linalg.cholesky(jnp.asarray(covs)))
  return mixture, weights, means, covs


def test_log_density_equals_scipy():
  mixture, weights, means, covs = hand_made()
  points = np.random.default_rng(1).normal(size=(20, 3)).astype(np.float32) * 3
  want = np.log(sum(w * stats.multivariate_normal(m, c).pdf(points) for w, m, c in zip(weights, means, covs)))
  got = jax.vmap(lambda u: prior.log_density(mixture, u))(points)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_standard_normal_prior_energy_is_the_papers_term():
  u = np.random.default_rng(2).normal(size=(5, 100)).astype(np.float32)
  got = jax.vmap(lambda x: prior.prior_energy(prior.standard_normal(100), x))(u)
  np.testing.assert_allclose(got, 0.5 * (u**2).sum(1), rtol=1e-5)


def test_samples_reproduce_the_mixtures_moments():
  mixture, weights, means, covs = hand_made()
  x = np.asarray(prior.sample(mixture, jax.random.key(0), 200_000))
  mean = weights @ means
  second = sum(w * (c + np.outer(m, m)) for w, m, c in zip(weights, means, covs))
  np.testing.assert_allclose(x.mean(0), mean, atol=0.03)
  np.testing.assert_allclose(np.cov(x, rowvar=False), second - np.outer(mean, mean), atol=0.1)


def test_em_recovers_known_clusters_and_the_held_out_choice_prefers_enough_components():
  mixture, weights, means, _ = hand_made()
  x = prior.sample(mixture, jax.random.key(1), 6000)
  fitted = prior.fit(x, 3, jax.random.key(2))
  order = np.argsort(np.asarray(fitted.means)[:, 0])  # the clusters differ along the first axis
  np.testing.assert_allclose(np.asarray(fitted.means)[order], means, atol=0.15)
  np.testing.assert_allclose(np.exp(np.asarray(fitted.log_weights))[order], weights, atol=0.03)
  best, scores = prior.fit_best(np.asarray(x), jax.random.key(3), candidates=(1, 2, 4))
  assert scores[1] < scores[2] < scores[4] + 0.05 and len(best.log_weights) in (4, 2) and best.means.shape[1] == 3
  # The fitted density is close to the true one on fresh points.
  fresh = prior.sample(mixture, jax.random.key(4), 2000)
  assert prior.mean_log_density(best, fresh) == pytest.approx(prior.mean_log_density(mixture, fresh), abs=0.05)


# --- the prior stored with a generator, `jaxprobe fit-prior`, and the search's use of it -------------


@pytest.fixture(scope="module")
def fitted(pong_q_agent, pong_q_agent_path, tmp_path_factory):
  """A tiny generator, a 64-state dataset of its agent, and `jaxprobe fit-prior` run on them."""
  root = tmp_path_factory.mktemp("prior")
  collect(pong_q_agent, root / "data", 64, num_envs=2, seed=3, progress=False)
  save_generator(root / "gen", tiny_generator(pong_q_agent))
  code = main(["fit-prior", "--generator", str(root / "gen"), "--dataset", str(root / "data"), "--samples", "32"])
  assert code == 0
  return root


def test_fit_prior_stores_a_mixture_of_the_standardised_latents(fitted, capsys):
  gen = load_generator(fitted / "gen")
  record = gen.metadata["latent_prior"]
  assert gen.prior is not None and gen.prior.means.shape == (record["components"], 8)
  assert set(record["check"]) == {"real states", "reconstructions", "fitted prior", "N(0, I)"}
  assert record["states"] == 64
  dataset = open_dataset(fitted / "data")
  # The reconstructions' row describes G(E(x)) of the 32 real states the check compares against.
  colour = np.asarray(dataset["colour"])
  checked = np.sort(np.random.default_rng(0).choice(64, 32, replace=False))
  drawn = np.round(np.asarray(gen.reconstruct(gen.variables, colour[checked])["colour"]) * 255).astype(np.uint8)
  want = objects.describe(drawn, objects.background(colour))
  got = record["check"]["reconstructions"]
  assert got["objects_per_frame"] == pytest.approx(want["objects_per_frame"], abs=0.05)
  assert got["share_with_object_of_size"] == pytest.approx(want["share_with_object_of_size"], abs=0.02)
  # Refitting the same states with the same seed gives the stored mixture.
  rows = np.sort(np.random.default_rng(0).choice(64, 64, replace=False))
  again, _ = fit_latent_prior(gen, np.asarray(dataset["colour"][rows]), jax.random.split(jax.random.key(0))[0])
  np.testing.assert_allclose(again.means, gen.prior.means, rtol=1e-4, atol=1e-4)
  assert gen.prior.scale_tril.dtype == np.float32


def test_search_starts_from_the_fitted_prior_and_its_energy_is_the_negative_log_density(fitted, pong_q_agent):
  gen = load_generator(fitted / "gen")
  config = ProbeConfig(num=4, steps=1, alpha=1.0)
  start = initial_variables(pong_q_agent, gen, config)
  np.testing.assert_array_equal(start, prior.sample(gen.prior, jax.random.key(config.seed), 4))
  target = get_target("T-", "q", 6, 1.0)
  energy = make_energy(pong_q_agent, target, config, gen)
  plain = make_energy(pong_q_agent, target, dataclasses.replace(config, alpha=0.0), gen)
  want = jax.vmap(lambda u: -prior.log_density(gen.prior, u) - 4 * np.log(2 * np.pi))(start)
  np.testing.assert_allclose(energy(start, None) - plain(start, None), want, rtol=1e-4)


def test_fit_prior_bad_inputs(fitted, pong_q_agent, tmp_path, capsys):
  other = tmp_path / "other-agent-gen"
  save_generator(other, tiny_generator(Agent(pong_q_agent.spec, pong_q_agent.spec.init(jax.random.key(7)), {})))
  cases = [
    (["--generator", str(other), "--dataset", str(fitted / "data")], "collected by another agent than the generator's"),
    (["--generator", str(tmp_path / "none"), "--dataset", str(fitted / "data")], "no generator checkpoint"),
    (
      ["--generator", str(fitted / "gen"), "--dataset", str(fitted / "data"), "--samples", "0"],
      "--samples: must be an integer >= 1",
    ),
  ]
  before = (fitted / "gen" / "generator.json").read_text()
  for args, message in cases:
    assert main(["fit-prior", *args]) == 2, args
    err = capsys.readouterr().err
    assert message in err and err.strip().count("\n") == 0, err
  assert (fitted / "gen" / "generator.json").read_text() == before
