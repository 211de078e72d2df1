"""Training the generator on an agent's dataset (docs/generator.md, sections 'Loss' and 'Training').

One jitted train step (optax Adam), data-parallel over every local device: the
batch is split over a mesh axis "batch", the state replicated, and XLA inserts
the gradient all-reduce (and computes batch norm statistics over the whole
batch), so one CPU, several virtual CPUs, one GPU or a TPU slice run the same
code and the same arithmetic. `updates` yields after every step and writes
nothing; `jaxprobe train-generator` runs it through a run directory.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxprobe.agents.agent import Agent, fingerprint
from jaxprobe.collection import objects
from jaxprobe.collection.dataset import Dataset
from jaxprobe.collection.loader import batches
from jaxprobe.config import NONNEGATIVE, POSITIVE, POSITIVE_INT, SEED, Config, Range, setting
from jaxprobe.errors import UserError
from jaxprobe.generator import losses, prior
from jaxprobe.generator.autoencoder import Generator
from jaxprobe.generator.spec import GeneratorBundle, GeneratorSpec, check_same_agent
from jaxprobe.parallel import batch_sharding, replicate

ABLATIONS = ("full", "vae", "saliency", "perception")


@dataclasses.dataclass(frozen=True)
class GeneratorConfig(Config):
  """The generator's loss weights, network and schedule (docs/generator.md, sections 'Loss' and 'Training')."""

  ablation: Literal["full", "vae", "saliency", "perception"] = "full"
  beta: float = setting(4.0, NONNEGATIVE)  # saliency weight in L_p (used by full and saliency)
  eta: float = setting(1e3, NONNEGATIVE)  # agent-perception weight (used by full and perception)
  # L_a on the outputs as they are (the paper's), centred on their mean over actions, or the
  # distillation loss tau^2 KL(softmax(A(x)/tau) || softmax(A(x')/tau)) at tau = perception_temperature
  perception: Literal["outputs", "centred", "softmax"] = "outputs"
  perception_temperature: float = setting(1.0, POSITIVE)
  # share of each state's L_p on its object pixels (0: off, the paper's loss)
  object_share: float = setting(0.0, Range(float, lo=0, hi=1, hi_open=True))
  # the object pixels of the object share: the real state's ("real"), or also those the
  # reconstruction draws off the background ("either"), which weighs smears and trails
  object_pixels: Literal["real", "either"] = "real"
  lam: float = setting(1e-4, NONNEGATIVE)  # KL weight
  latent_dim: int = setting(100, POSITIVE_INT)
  widths: tuple[int, ...] = setting((32, 64, 128, 256), POSITIVE_INT)
  upsample: Literal["transpose", "subpixel"] = "transpose"
  conv_impl: Literal["auto", "fast", "hybrid", "xla"] = "auto"
  lr: float = setting(1e-3, POSITIVE)
  batch_size: int = setting(16, POSITIVE_INT)
  total_steps: int = setting(20_000, POSITIVE_INT)
  seed: int = setting(0, SEED)
  checkpoint_every: int = setting(1_000, POSITIVE_INT)
  log_every: int = setting(100, POSITIVE_INT)
  image_every: int = setting(1_000, POSITIVE_INT)
  fit_prior: bool = True  # at the end, fit the latent prior the search uses (`jaxprobe fit-prior`)
  init: str = ""  # a generator folder to start from (same game and network, fresh optimizer); "": fresh weights

  def loss_weights(self) -> tuple[float, float]:
    """(beta, eta) after the ablation: vae drops both, saliency drops eta, perception drops beta."""
    beta = self.beta if self.ablation in ("full", "saliency") else 0.0
    eta = self.eta if self.ablation in ("full", "perception") else 0.0
    return beta, eta


class TrainState(NamedTuple):
  """Everything a resumed run needs: params, batch norm statistics, Adam state, PRNG key, step."""

  params: Any
  batch_stats: Any
  opt_state: Any
  key: jax.Array
  step: jax.Array


def generator_spec(config: GeneratorConfig, agent: Agent) -> GeneratorSpec:
  """The spec of the generator `config` trains for `agent`."""
  return GeneratorSpec(
    latent_dim=config.latent_dim,
    widths=config.widths,
    upsample=config.upsample,
    env_id=agent.spec.env_id,
    agent_fingerprint=fingerprint(agent.params),
  )


def init_state(spec: GeneratorSpec, config: GeneratorConfig, optimizer) -> TrainState:
  """Fresh variables and optimizer state, seeded by `config.seed`, at step 0."""
  key, init_key = jax.random.split(jax.random.key(config.seed))
  variables = spec.init(init_key)
  return TrainState(
    variables["params"], variables["batch_stats"], optimizer.init(variables["params"]), key, jnp.zeros((), jnp.int32)
  )


def make_loss(network: Generator, agent: Agent, config: GeneratorConfig, background: np.ndarray | None = None):
  """`loss(params, batch_stats, agent_params, batch, key) -> (total, (batch_stats, terms))`.

  `background` `(84, 84, 3)` uint8 (`collection.objects.background` of the dataset) is needed
  when `config.object_share` > 0.
  """
  beta, eta = config.loss_weights()
  head = agent.spec.action_head
  if config.object_share > 0 and background is None:
    raise ValueError("object_share > 0 needs the dataset's background")
  bg = None if background is None else jnp.asarray(background, jnp.float32) / 255.0

  def loss(params, batch_stats, agent_params, batch, key):
    real = batch["colour"].astype(jnp.float32) / 255.0
    out, updated = network.apply(
      {"params": params, "batch_stats": batch_stats}, real, train=True, rngs={"latent": key}, mutable=["batch_stats"]
    )
    weights = None
    if config.object_share > 0:
      drawn = out["colour"] if config.object_pixels == "either" else None
      weights = losses.object_weights(real, bg, config.object_share, recon=drawn)
    l_p = losses.reconstruction(real, out["colour"], batch["mask"], beta, weights)
    if eta > 0:
      # The agent is frozen: only the generator learns from its reading of the reconstruction.
      frozen = jax.lax.stop_gradient(agent_params)
      recon_outputs = agent.spec.apply(frozen, out["agent_view"])[head]
      if config.perception == "softmax":
        l_a = losses.perception_softmax(batch[head], recon_outputs, config.perception_temperature)
      else:
        l_a = losses.perception(batch[head], recon_outputs, centred=config.perception == "centred")
    else:  # the agent's forward pass is skipped when its term has no weight
      l_a = jnp.zeros_like(l_p)
    kl = losses.kl_to_standard_normal(out["mean"], out["logvar"])
    terms = dict(L_p=l_p.mean(), L_a=l_a.mean(), KL=kl.mean())
    return losses.total(l_p, l_a, kl, eta, config.lam), (updated["batch_stats"], terms)

  return loss


def make_train_step(
  network: Generator, agent: Agent, config: GeneratorConfig, optimizer, background: np.ndarray | None = None
):
  """`train_step(state, agent_params, batch) -> (state, metrics)`: one optimizer step (pure, jittable)."""
  loss_fn = make_loss(network, agent, config, background)

  def train_step(state: TrainState, agent_params, batch):
    key, step_key = jax.random.split(state.key)
    (total, (batch_stats, terms)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params, state.batch_stats, agent_params, batch, step_key
    )
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    new = TrainState(optax.apply_updates(state.params, updates), batch_stats, opt_state, key, state.step + 1)
    return new, dict(loss=total, **terms)

  return train_step


def encoder_means(network: Generator, variables: dict, colour: np.ndarray, batch: int = 256) -> np.ndarray:
  """The encoder's means `(N, latent_dim)` of real colour stacks `(N, 84, 84, 12)` uint8."""
  encode = jax.jit(lambda v, x: network.apply(v, x.astype(jnp.float32) / 255.0, method="encode")[0])
  return np.concatenate(
    [np.asarray(encode(variables, np.asarray(colour[i : i + batch]))) for i in range(0, len(colour), batch)]
  )


def latent_statistics(network: Generator, variables: dict, colour: np.ndarray) -> dict:
  """Per-dimension mean and std of the encoder's means over real colour stacks (uint8).

  The search works in these coordinates (docs/generator.md, section 'Latent coordinates').
  """
  means = encoder_means(network, variables, colour)
  return dict(latent_mean=means.mean(0).round(6).tolist(), latent_std=np.maximum(means.std(0), 1e-3).round(6).tolist())


def fit_latent_prior(
  generator: GeneratorBundle, colour: np.ndarray, key: jax.Array
) -> tuple[prior.GaussianMixture, dict]:
  """The latent prior of `generator`: a Gaussian mixture fitted to the standardised latents
  u = (z - m) / s of real colour stacks (`prior.fit_best`); also the held-out log density per
  number of components."""
  mean, std = generator.latent_coordinates()
  u = (encoder_means(generator.spec.network(), generator.variables, colour) - mean) / std
  return prior.fit_best(u, key)


def check_inputs(config: GeneratorConfig, dataset: Dataset, agent: Agent, mesh: jax.sharding.Mesh) -> None:
  """A UserError if `dataset` is another agent's, or the batch is larger than it or does not split over
  the mesh."""
  check_same_agent(agent, dataset=dataset)
  if config.batch_size > len(dataset):
    raise UserError(
      f"config field 'batch_size' ({config.batch_size}) is larger than the dataset ({len(dataset)} states); "
      "use a smaller batch or collect more states"
    )
  if config.batch_size % mesh.size:
    raise UserError(f"batch_size {config.batch_size} must be a multiple of the {mesh.size} devices")


def updates(
  config: GeneratorConfig,
  dataset: Dataset,
  agent: Agent,
  state: TrainState,
  mesh: jax.sharding.Mesh,
  tally: dict | None = None,
) -> Iterator[tuple[TrainState, int, dict]]:
  """Generator training from `state` until `config.total_steps`: yields (state, step, loss terms).

  Each item is one jitted Adam step on one global batch, split over the mesh's "batch" axis
  (the state replicated; XLA inserts the gradient all-reduce and takes batch norm statistics
  over the whole batch). Batches follow the seeded epoch order from the state's step, so a
  resumed run sees the same batches as an uninterrupted one. On many hosts the mesh spans every
  process's devices and each process reads only its devices' rows of each batch (`tally` counts
  them, `collection.loader.batches`).
  """
  check_inputs(config, dataset, agent, mesh)
  network = generator_spec(config, agent).network(config.conv_impl)
  state = replicate(state, mesh)
  agent_params = replicate(agent.params, mesh)
  background = objects.background(dataset["colour"]) if config.object_share > 0 else None
  step_fn = jax.jit(make_train_step(network, agent, config, optax.adam(config.lr), background))
  names = ("colour", "mask", agent.spec.action_head)
  data = batches(
    dataset,
    config.batch_size,
    seed=config.seed,
    names=names,
    start_batch=int(state.step),
    sharding=batch_sharding(mesh),
    tally=tally,
  )
  try:
    for step in range(int(state.step), config.total_steps):
      state, metrics = step_fn(state, agent_params, next(data))
      yield state, step + 1, metrics
  finally:
    data.close()
