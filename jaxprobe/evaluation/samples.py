"""Do a latent prior's samples look like the game? Object statistics and spread against real states.

A prior that models the states decodes to states with the game's objects (a ball in Pong in
about as many frames as real play shows one) and as varied as real ones; N(0, I) in the
standardised latents decodes to one average frame.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from jaxprobe.collection import objects
from jaxprobe.collection.dataset import Dataset, draw_rows
from jaxprobe.errors import UserError
from jaxprobe.evaluation.novelty import spread
from jaxprobe.generator.prior import GaussianMixture, sample, standard_normal
from jaxprobe.generator.spec import GeneratorBundle
from jaxprobe.generator.train import fit_latent_prior
from jaxprobe.search.spaces import latent_renderer


def decode_samples(generator: GeneratorBundle, mixture: GaussianMixture, num: int, key: jax.Array, batch: int = 256):
  """`num` states decoded from the mixture's samples u: (colour `(num, 84, 84, 12)` uint8, agent view)."""
  return decode_latents(generator, np.asarray(sample(mixture, key, num)), batch)


def reconstruct(generator: GeneratorBundle, colour: np.ndarray, batch: int = 256):
  """G(E(x)) of real colour stacks `(N, 84, 84, 12)` uint8: (colour uint8, agent view)."""
  run = jax.jit(lambda v, x: (lambda out: (out["colour"], out["agent_view"]))(generator.reconstruct(v, x)))
  return to_states(lambda rows: run(generator.variables, np.asarray(colour[rows])), len(colour), batch)


def decode_latents(generator: GeneratorBundle, u: np.ndarray, batch: int = 256):
  """States decoded from latent coordinates u `(N, D)`: (colour `(N, 84, 84, 12)` uint8, agent view)."""
  decode = jax.jit(latent_renderer(generator))
  return to_states(lambda rows: decode(generator.variables, u[rows]), len(u), batch)


def to_states(render, num: int, batch: int):
  """`render(rows)` -> (colour in [0, 1], agent view in [0, 255]) over `num` rows in batches, as uint8."""
  colour, gray = [], []
  for i in range(0, num, batch):
    c, g = render(slice(i, i + batch))
    colour.append(np.round(np.asarray(c) * 255).astype(np.uint8))
    gray.append(np.round(np.asarray(g)).astype(np.uint8))
  return np.concatenate(colour), np.concatenate(gray)


def sample_statistics(colour: np.ndarray, gray: np.ndarray, background: np.ndarray) -> dict:
  """Objects per frame, share of frames with an object of each size (`objects.describe`), and spread."""
  return dict(**objects.describe(colour, background), spread=spread(gray))


def compare_with_real(
  generator: GeneratorBundle, mixtures: dict, real_colour: np.ndarray, real_gray: np.ndarray, num: int, key: jax.Array
) -> dict:
  """Statistics of `num` decoded samples of each named mixture, of `num` real states and of their
  reconstructions: samples can look no more like the game than the decoder draws it, so a gap that
  the reconstructions share is the generator's, not the prior's."""
  background = objects.background(real_colour)
  rows = draw_rows(len(real_colour), num, 0)
  real = np.asarray(real_colour[rows])
  out = {
    "real states": sample_statistics(real, np.asarray(real_gray[rows]), background),
    "reconstructions": sample_statistics(*reconstruct(generator, real), background),
  }
  for name, mixture in mixtures.items():
    out[name] = sample_statistics(*decode_samples(generator, mixture, num, key), background)
  return out


def fit_prior(
  generator: GeneratorBundle, dataset: Dataset, states: int = 10_000, samples: int = 1000, seed: int = 0
) -> tuple[GeneratorBundle, dict]:
  """`generator` with a latent prior fitted to up to `states` of `dataset`'s states, and the check:
  `samples` decoded samples of it and of N(0, I) against as many real states (`compare_with_real`).

  The dataset must hold the game and agent the generator was trained for (its training data, or
  more states of the same agent).
  """
  if dataset.agent_fingerprint != generator.spec.agent_fingerprint:
    raise UserError(
      f"dataset {dataset.path} was collected by another agent than the generator's (fingerprint "
      f"{dataset.agent_fingerprint}, the generator's {generator.spec.agent_fingerprint}); use its training data"
    )
  if states <= 0 or samples <= 0:
    raise UserError(f"--states and --samples must be positive, got {states} and {samples}")
  rows = draw_rows(len(dataset), states, seed)
  colour = np.asarray(dataset["colour"][rows])
  key_fit, key_samples = jax.random.split(jax.random.key(seed))
  mixture, held_out = fit_latent_prior(generator, colour, key_fit)
  check = compare_with_real(
    generator,
    {"fitted prior": mixture, "N(0, I)": standard_normal(generator.spec.latent_dim)},
    colour,
    np.asarray(dataset["gray"][rows]),
    samples,
    key_samples,
  )
  record = dict(
    components=int(len(mixture.log_weights)),
    held_out_log_density={str(k): round(v, 3) for k, v in held_out.items()},
    states=len(rows),
    dataset=str(dataset.path),
    seed=seed,
    check=check,
  )
  fitted = dataclasses.replace(generator, prior=mixture, metadata=dict(generator.metadata, latent_prior=record))
  return fitted, record
