"""`jaxprobe train-generator`: the generator trained on an agent's dataset in a resumable run directory.

    jaxprobe train-generator --config configs/generator_cpu.yaml --dataset data/seaquest --agent AGENT \\
        --out runs/gen ablation=full

The run directory gets config.yaml, checkpoints (latest only), curve.csv and curve.png,
objects.csv (at each checkpoint, on 256 training states: greedy actions kept and objects drawn,
as `jaxprobe fidelity` measures them), reconstructions.png (real states beside G(E(x)), the agent's action on each) and
generator/, which every later command loads, with the latent prior fitted at the end (`fit_prior`,
as `jaxprobe fit-prior` does). The loss and its values: docs/generator.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxprobe.agents.agent import Agent
from jaxprobe.agents.checkpoint import load_agent
from jaxprobe.collection import objects
from jaxprobe.collection.dataset import Dataset, open_dataset
from jaxprobe.commands import flags
from jaxprobe.config import apply_overrides, from_dict, read_yaml, to_dict
from jaxprobe.errors import UserError
from jaxprobe.evaluation.samples import fit_prior
from jaxprobe.files import plain, save_png
from jaxprobe.generator.reconstruction import fidelity, fidelity_row
from jaxprobe.generator.spec import GeneratorBundle, GeneratorSpec, load_generator, save_generator
from jaxprobe.generator.train import (
  GeneratorConfig,
  check_inputs,
  generator_spec,
  init_state,
  latent_statistics,
  updates,
)
from jaxprobe.hosts import is_leader, together
from jaxprobe.parallel import batch_mesh
from jaxprobe.report.images import grid
from jaxprobe.runs import RunDir, drive, plot_curve

NAME = "train-generator"
WRITES = ("out",)  # held for the whole command (cli.main)
HOSTS = True  # runs on many processes (jaxprobe.hosts): each reads its devices' rows of every batch
HELP = "train the state generator on an agent's dataset"
DESCRIPTION = (
  "Train the VAE-like generator with the saliency-weighted reconstruction, agent-perception and KL "
  "losses (the config's 'ablation' picks full, vae, saliency or perception). Resumable; writes "
  "curve.csv/png, reconstructions.png and generator/."
)
SHEET_STATES = 8  # real states shown beside their reconstructions
STATS_STATES = 2048  # real states whose encodings give the latent coordinates
CHECK_STATES = 256  # training states measured at each checkpoint (objects.csv)


def add_arguments(p: argparse.ArgumentParser) -> None:
  """The subcommand's flags."""
  p.add_argument("--config", required=True, help="YAML config, e.g. configs/generator_cpu.yaml")
  p.add_argument("--dataset", required=True, help="dataset collected with --agent")
  flags.agent(p, help="the agent the dataset was collected with")
  flags.out(p, "run directory")
  flags.resume(p)
  flags.no_verify(p)
  flags.quiet(p)
  flags.overrides(p, "ablation=vae")


def reconstruction_sheet(bundle: GeneratorBundle, agent: Agent, sample: dict, conv_impl: str = "auto") -> np.ndarray:
  """Real states beside G(E(x)) (newest frame, 2x), captioned with the agent's greedy action on each."""
  out = bundle.reconstruct(bundle.variables, sample["colour"], conv_impl)
  head = agent.spec.action_head
  real_action = np.argmax(sample[head], -1)
  recon_action = np.argmax(np.asarray(agent.spec.apply(agent.params, out["agent_view"])[head]), -1)
  up = lambda a: np.kron((np.clip(a, 0, 1) * 255).astype(np.uint8), np.ones((2, 2, 1), np.uint8))
  real = sample["colour"].astype(np.float32) / 255.0
  tiles = [
    np.concatenate([up(real[i, ..., -3:]), up(np.asarray(out["colour"][i, ..., -3:]))], axis=1)
    for i in range(len(real))
  ]
  captions = [f"real a={a}  recon a={b}" for a, b in zip(real_action, recon_action)]
  return grid(tiles, captions, cols=4)


def load_generator_config(path: str | Path, overrides: Sequence[str] = ()) -> GeneratorConfig:
  """The config in YAML file `path` with `field=value` overrides; a run's own `config.yaml` (which
  records `algorithm: generator`) loads too."""
  values = read_yaml(path)
  algorithm = values.pop("algorithm", "generator")
  if algorithm != "generator":
    raise UserError(
      f"{path} configures a {algorithm} agent, not a generator; give a generator config such as "
      "configs/generator_cpu.yaml"
    )
  return from_dict(GeneratorConfig, apply_overrides(values, overrides))


def check_init(init: GeneratorBundle, path: str, spec: GeneratorSpec) -> None:
  """A UserError unless generator `init` (read from `path`) can start a run that trains `spec`: the
  same game and network (it may have been trained for another agent of the game)."""
  if init.spec.env_id != spec.env_id:
    raise UserError(f"init={path}: that generator draws {init.spec.env_id}, the agent plays {spec.env_id}")
  theirs, ours = (dataclasses.replace(s, env_id="", agent_fingerprint="") for s in (init.spec, spec))
  differ = [f.name for f in dataclasses.fields(ours) if getattr(theirs, f.name) != getattr(ours, f.name)]
  if differ:
    raise UserError(
      f"init={path}: that generator has {', '.join(f'{k} {getattr(theirs, k)}' for k in differ)}, the config "
      f"{', '.join(f'{k} {getattr(ours, k)}' for k in differ)}; set them to match"
    )


def train_generator(
  config: GeneratorConfig,
  dataset: Dataset,
  agent: Agent,
  out: str | Path,
  resume: bool = False,
  progress: bool = True,
  verify: bool = True,
) -> GeneratorBundle | None:
  """Trains (or resumes) a generator in run directory `out`; returns it. A new run starts from the
  parameters of the generator at `config.init` (with a fresh optimizer) when it names one.

  On many hosts (`jaxprobe.hosts`) every process trains on its devices' rows of each global batch
  and takes part in each checkpoint; process 0 alone writes the rest of the run and returns the
  generator (the others return None).
  """
  mesh, leader = batch_mesh(), is_leader()
  spec = generator_spec(config, agent)

  def open_run():  # checked on every process before any work: one that refuses, all refuse
    check_inputs(config, dataset, agent, mesh)
    init = load_generator(config.init, verify=verify) if config.init and not resume else None
    if init is not None:
      check_init(init, config.init, spec)
    return init, RunDir(out, "generator", config, resume, writer=leader)

  init, run = together(open_run)
  state = init_state(spec, config, optax.adam(config.lr))
  if resume:
    state = run.resume(state)
  elif init is not None:
    state = state._replace(
      params=jax.tree.map(jnp.asarray, init.variables["params"]),
      batch_stats=jax.tree.map(jnp.asarray, init.variables["batch_stats"]),
    )
  rng = np.random.default_rng
  if leader:  # what only the writer shows: the sheet, the latent coordinates, the check
    sample_idx = np.sort(rng(config.seed).choice(len(dataset), SHEET_STATES, replace=False))
    sample = {k: np.asarray(dataset[k][sample_idx]) for k in ("colour", agent.spec.action_head)}
    stats_idx = np.sort(rng(config.seed + 1).choice(len(dataset), min(STATS_STATES, len(dataset)), replace=False))
    stats_colour = np.asarray(dataset["colour"][stats_idx])
    background = objects.background(dataset["colour"])  # for the check at each checkpoint
  beta, eta = config.loss_weights()

  def bundle(state, metadata=None) -> GeneratorBundle:
    variables = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})
    return GeneratorBundle(spec, variables, metadata or {})

  def save(state, step, wall):
    if not leader:
      run.save(step, state, dict(step=step, wall_time=wall))  # every process takes part
      return
    # The check first: a process killed after the checkpoint still has its row.
    check = fidelity(agent, bundle(state), dataset, num=CHECK_STATES, seed=config.seed, background=background)
    run.record("objects.csv", dict(step=step, **fidelity_row(check)))
    run.save(step, state, dict(step=step, wall_time=wall))
    plot_curve(
      run.curve_file,
      run.path / "curve.png",
      ["loss", "L_p", "L_a", "KL"],
      f"generator ({config.ablation}) on {agent.spec.env_id}",
      "loss (summed per state)",
      log_y=True,
    )
    variables = bundle(state).variables
    save_generator(
      run.path / "generator",
      GeneratorBundle(
        spec,
        variables,
        plain(
          dict(
            steps=step,
            wall_time_s=round(wall, 1),
            ablation=config.ablation,
            beta=beta,
            eta=eta,
            lam=config.lam,
            loss_reduction="sum per state, mean over batch",
            dataset=str(dataset.path),
            config=to_dict(config),
            training_states_check=check,
            **latent_statistics(spec.network(config.conv_impl), variables, stats_colour),
          )
        ),
      ),
    )

  def draw(state, step):
    if leader:
      save_png(run.path / "reconstructions.png", reconstruction_sheet(bundle(state), agent, sample, config.conv_impl))

  tally = {}
  state, _ = drive(
    run,
    updates(config, dataset, agent, state, mesh, tally),
    state,
    end=config.total_steps,
    log_every=config.log_every,
    checkpoint_every=config.checkpoint_every,
    save=save,
    desc=f"generator {config.ablation}",
    progress=progress and leader,
    postfix=("loss", "L_a"),
    finite=("loss",),
    every=((config.image_every, draw),),
  )
  draw(state, config.total_steps)
  run.close()
  if jax.process_count() > 1:  # what each process read: its own devices' rows of each batch
    print(
      f"process {jax.process_index()} of {jax.process_count()} read {tally.get('rows', 0)} rows of the dataset "
      f"for {tally.get('batches', 0)} batches of {config.batch_size}",
      file=sys.stderr,
    )
  if not leader:
    return None
  generator = load_generator(run.path / "generator")
  if config.fit_prior:
    generator, _ = fit_prior(generator, dataset, seed=config.seed)
    save_generator(run.path / "generator", generator)
  return generator


def run(args: argparse.Namespace) -> None:
  """Runs the subcommand."""
  config, agent, dataset = together(
    lambda: (
      load_generator_config(args.config, args.overrides),
      load_agent(args.agent, verify=not args.no_verify),
      open_dataset(args.dataset, verify=not args.no_verify),
    )
  )
  trained = train_generator(
    config, dataset, agent, args.out, resume=args.resume, progress=not args.quiet, verify=not args.no_verify
  )
  if trained is None:  # not the writer (jaxprobe.hosts)
    return
  print(
    f"trained the {config.ablation} generator: {args.out}/generator, curves in {args.out}/curve.png, "
    f"samples in {args.out}/reconstructions.png"
  )
