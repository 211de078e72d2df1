"""`jaxprobe train-generator`: the generator of METHOD.md 3 trained on an agent's dataset.

One jitted train step (optax Adam), data-parallel over every local device: the
batch is split over a mesh axis "batch", the state replicated, and XLA inserts
the gradient all-reduce (and computes batch norm statistics over the whole
batch), so one CPU, several virtual CPUs, one GPU or a TPU slice run the same
code and the same arithmetic. Multi-host: call `jax.distributed.initialize()`
before anything else; the mesh then spans every host's devices.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from jaxprobe.agents.agent import Agent
from jaxprobe.agents.checkpoint import fingerprint
from jaxprobe.config import to_dict
from jaxprobe.data.dataset import Dataset
from jaxprobe.data.loader import batches
from jaxprobe.errors import UserError
from jaxprobe.generator import losses
from jaxprobe.generator.checkpoint import GeneratorBundle, GeneratorSpec, save_generator
from jaxprobe.generator.networks import Generator
from jaxprobe.parallel import batch_mesh, batch_sharding, replicated
from jaxprobe.report.images import grid, save_png
from jaxprobe.runs import RunDir, metadata_json, plot_curve

ABLATIONS = ("full", "vae", "saliency", "perception")


@dataclasses.dataclass(frozen=True)
class GeneratorConfig:
  ablation: Literal["full", "vae", "saliency", "perception"] = "full"
  beta: float = 4.0        # saliency weight in L_p (used by full and saliency)
  eta: float = 1e3         # agent-perception weight (used by full and perception)
  lam: float = 1e-4        # KL weight
  latent_dim: int = 100
  widths: tuple[int, ...] = (32, 64, 128, 256)
  upsample: Literal["transpose", "subpixel"] = "transpose"
  conv_impl: Literal["auto", "fast", "hybrid", "xla"] = "auto"
  lr: float = 1e-3
  batch_size: int = 16
  total_steps: int = 20_000
  seed: int = 0
  checkpoint_every: int = 1_000
  log_every: int = 100
  image_every: int = 1_000

  def loss_weights(self) -> tuple[float, float]:
    """(beta, eta) after the ablation: vae drops both, saliency drops eta, perception drops beta."""
    beta = self.beta if self.ablation in ("full", "saliency") else 0.0
    eta = self.eta if self.ablation in ("full", "perception") else 0.0
    return beta, eta


class TrainState(NamedTuple):
  params: Any
  batch_stats: Any
  opt_state: Any
  key: jax.Array
  step: jax.Array


def generator_spec(config: GeneratorConfig, agent: Agent) -> GeneratorSpec:
  return GeneratorSpec(latent_dim=config.latent_dim, widths=config.widths, upsample=config.upsample,
                       env_id=agent.spec.env_id, agent_fingerprint=fingerprint(agent.params))


def init_state(spec: GeneratorSpec, config: GeneratorConfig, optimizer) -> TrainState:
  key, init_key = jax.random.split(jax.random.key(config.seed))
  variables = spec.init(init_key)
  return TrainState(variables["params"], variables["batch_stats"], optimizer.init(variables["params"]), key,
                    jnp.zeros((), jnp.int32))


def make_loss(network: Generator, agent: Agent, config: GeneratorConfig):
  """`loss(params, batch_stats, agent_params, batch, key) -> (total, (batch_stats, terms))`."""
  beta, eta = config.loss_weights()
  head = agent.spec.action_head

  def loss(params, batch_stats, agent_params, batch, key):
    real = batch["colour"].astype(jnp.float32) / 255.0
    out, updated = network.apply({"params": params, "batch_stats": batch_stats}, real, train=True,
                                 rngs={"latent": key}, mutable=["batch_stats"])
    l_p = losses.reconstruction(real, out["colour"], batch["mask"], beta)
    if eta > 0:
      # The agent is frozen: only the generator learns from its reading of the reconstruction.
      frozen = jax.lax.stop_gradient(agent_params)
      l_a = losses.perception(batch[head], agent.spec.apply(frozen, out["agent_view"])[head])
    else:  # the agent's forward pass is skipped when its term has no weight
      l_a = jnp.zeros_like(l_p)
    kl = losses.kl_to_standard_normal(out["mean"], out["logvar"])
    terms = dict(L_p=l_p.mean(), L_a=l_a.mean(), KL=kl.mean())
    return losses.total(l_p, l_a, kl, eta, config.lam), (updated["batch_stats"], terms)

  return loss


def make_train_step(network: Generator, agent: Agent, config: GeneratorConfig, optimizer):
  loss_fn = make_loss(network, agent, config)

  def train_step(state: TrainState, agent_params, batch):
    key, step_key = jax.random.split(state.key)
    (total, (batch_stats, terms)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, state.batch_stats, agent_params, batch, step_key)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    new = TrainState(optax.apply_updates(state.params, updates), batch_stats, opt_state, key, state.step + 1)
    return new, dict(loss=total, **terms)

  return train_step


def check_dataset_fits(dataset: Dataset, agent: Agent) -> None:
  made_with = dataset.manifest["agent"]["fingerprint"]
  if made_with != fingerprint(agent.params):
    raise UserError(f"dataset {dataset.path} was collected by another agent (fingerprint {made_with}, this "
                    f"agent's is {fingerprint(agent.params)}); collect a dataset with this agent")


def _sheet(network, variables, agent: Agent, sample: dict) -> np.ndarray:
  real = sample["colour"].astype(np.float32) / 255.0
  out = network.apply(variables, real, train=False)
  spec = agent.spec
  real_action = np.argmax(sample[spec.action_head], -1)
  recon_action = np.argmax(np.asarray(spec.apply(agent.params, out["agent_view"])[spec.action_head]), -1)
  up = lambda a: np.kron((np.clip(a, 0, 1) * 255).astype(np.uint8), np.ones((2, 2, 1), np.uint8))
  tiles = [np.concatenate([up(real[i, ..., -3:]), up(np.asarray(out["colour"][i, ..., -3:]))], axis=1)
           for i in range(len(real))]
  captions = [f"real a={a}  recon a={b}" for a, b in zip(real_action, recon_action)]
  return grid(tiles, captions, cols=4)


def latent_statistics(network: Generator, variables: dict, colour: np.ndarray, batch: int = 256) -> dict:
  """Per-dimension mean and std of the encoder's means over real colour stacks (uint8)."""
  encode = jax.jit(lambda v, x: network.apply(v, x.astype(jnp.float32) / 255.0, method="encode")[0])
  means = np.concatenate([np.asarray(encode(variables, np.asarray(colour[i:i + batch])))
                          for i in range(0, len(colour), batch)])
  return dict(latent_mean=means.mean(0).round(6).tolist(), latent_std=np.maximum(means.std(0), 1e-3).round(6).tolist())


def train(config: GeneratorConfig, dataset: Dataset, agent: Agent, out: str | Path, resume: bool = False,
          progress: bool = True) -> GeneratorBundle:
  """Trains (or resumes) a generator in run directory `out`; returns it."""
  check_dataset_fits(dataset, agent)
  mesh = batch_mesh()
  if config.batch_size % mesh.size:
    raise UserError(f"batch_size {config.batch_size} must be a multiple of the {mesh.size} devices")
  run = RunDir(out, "generator", config, resume)
  spec = generator_spec(config, agent)
  network = spec.network(config.conv_impl)
  optimizer = optax.adam(config.lr)
  state = init_state(spec, config, optimizer)
  wall_before = 0.0
  if resume:
    state, meta = run.restore(state)
    wall_before = meta["wall_time"]
    run.truncate_curve(int(state.step))
  state = jax.device_put(state, replicated(mesh))
  agent_params = jax.device_put(agent.params, replicated(mesh))
  step_fn = jax.jit(make_train_step(network, agent, config, optimizer))
  head = agent.spec.action_head
  names = ("colour", "mask", head)
  data = batches(dataset, config.batch_size, seed=config.seed, names=names, start_batch=int(state.step),
                 sharding=batch_sharding(mesh))
  sample_idx = np.sort(np.random.default_rng(config.seed).choice(len(dataset), 8, replace=False))
  stats_idx = np.sort(np.random.default_rng(config.seed + 1).choice(len(dataset), min(2048, len(dataset)), replace=False))
  stats_colour = np.asarray(dataset["colour"][stats_idx])
  sample = {k: np.asarray(dataset[k][sample_idx]) for k in names}
  step = int(state.step)
  t0 = time.perf_counter()
  last_good = run.latest_step()

  def checkpoint(state, step):
    wall = wall_before + time.perf_counter() - t0
    run.save(step, state, dict(step=step, wall_time=wall))
    plot_curve(run.curve_file, run.path / "curve.png", ["loss", "L_p", "L_a", "KL"],
               f"generator ({config.ablation}) on {agent.spec.env_id}", "loss (summed per state)", log_y=True)
    beta, eta = config.loss_weights()
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    save_generator(run.path / "generator", GeneratorBundle(spec, variables,
        metadata_json(dict(steps=step, wall_time_s=round(wall, 1), ablation=config.ablation, beta=beta, eta=eta,
                           lam=config.lam, loss_reduction="sum per state, mean over batch",
                           dataset=str(dataset.path), config=to_dict(config),
                           **latent_statistics(network, jax.device_get(variables), stats_colour)))))

  bar = tqdm(total=config.total_steps, initial=step, disable=not progress, unit="step",
             desc=f"generator {config.ablation}", dynamic_ncols=True)
  for batch in data:
    if step >= config.total_steps:
      break
    new_state, metrics = step_fn(state, agent_params, batch)
    metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
    if not np.isfinite(metrics["loss"]):
      bad = [k for k in ("L_p", "L_a", "KL") if not np.isfinite(metrics[k])] or ["loss"]
      kept = f"the last good checkpoint (step {last_good}) is kept" if last_good is not None else "no checkpoint was saved yet"
      raise UserError(f"the loss became non-finite at step {step + 1} (term {bad[0]}); {kept} in {run.path}; "
                      "lower lr or check the dataset")
    state, step = new_state, step + 1
    bar.update(1)
    bar.set_postfix(loss=f"{metrics['loss']:.1f}", L_a=f"{metrics['L_a']:.3g}")
    if step % config.log_every == 0:
      run.log(dict(step=step, wall_time=round(wall_before + time.perf_counter() - t0, 1), **metrics))
    if step % config.image_every == 0:
      save_png(run.path / "reconstructions.png",
               _sheet(network, {"params": state.params, "batch_stats": state.batch_stats}, agent, sample))
    if step % config.checkpoint_every == 0:
      checkpoint(state, step)
      last_good = step
  bar.close()
  data.close()
  if run.latest_step() != step:
    checkpoint(state, step)
  save_png(run.path / "reconstructions.png",
           _sheet(network, {"params": state.params, "batch_stats": state.batch_stats}, agent, sample))
  run.close()
  return GeneratorBundle(spec, jax.device_get({"params": state.params, "batch_stats": state.batch_stats}))
