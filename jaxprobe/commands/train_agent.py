"""`jaxprobe train-agent`: a DQN or PPO agent trained in a resumable run directory.

    jaxprobe train-agent --config configs/seaquest_ppo.yaml --out runs/seaquest_ppo stop_after=100352

The YAML config's `algorithm` field picks the trainer (`agents.dqn` or `agents.ppo`);
the run directory gets config.yaml, checkpoints (latest only), curve.csv, curve.png and
agent/ (load it with `--agent DIR/agent`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Iterable

import jax
import numpy as np

from jaxprobe.agents import dqn, ppo
from jaxprobe.agents.agent import Agent
from jaxprobe.agents.checkpoint import save_agent
from jaxprobe.commands import flags
from jaxprobe.config import apply_overrides, from_dict, read_yaml, to_dict
from jaxprobe.envs import check_env_id, num_actions
from jaxprobe.errors import UserError
from jaxprobe.files import plain
from jaxprobe.runs import RunDir, drive, plot_curve

NAME = "train-agent"
WRITES = ("out",)  # held for the whole command (cli.main)
HELP = "train a DQN or PPO agent on an envpool Atari game"
DESCRIPTION = (
  "Train an agent from a YAML config (its 'algorithm' field is dqn or ppo). The run directory gets "
  "config.yaml, resumable checkpoints (latest only), curve.csv, curve.png and agent/ (load it with "
  "--agent DIR/agent)."
)

ALGORITHMS = {"ppo": ppo, "dqn": dqn}
CONFIGS = {"ppo": ppo.PPOConfig, "dqn": dqn.DQNConfig}
SAVED_AS = {"ppo": "ppo", "dqn": "double_dqn"}  # the algorithm name an exported agent records


def add_arguments(p: argparse.ArgumentParser) -> None:
  """The subcommand's flags."""
  p.add_argument("--config", required=True, help="YAML config, e.g. configs/seaquest_ppo.yaml")
  flags.out(p, "run directory")
  flags.resume(p, "continue the run in --out from its latest checkpoint")
  flags.quiet(p)
  flags.overrides(p, "total_steps=100000")


def load_training_config(path: str | Path, overrides: Iterable[str] = ()) -> tuple[str, Any]:
  """(algorithm, config) from a YAML file whose `algorithm` field picks the trainer."""
  values = read_yaml(path)
  algorithm = values.pop("algorithm", None)
  if algorithm not in ALGORITHMS:
    raise UserError(f"{path}: 'algorithm' must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
  config = from_dict(CONFIGS[algorithm], apply_overrides(values, overrides))
  check_env_id(config.env_id)
  return algorithm, config


def train_agent(algorithm: str, config: Any, out: str | Path, resume: bool = False, progress: bool = True) -> Agent:
  """Trains (or resumes) an agent in run directory `out`; returns the final agent."""
  module = ALGORITHMS[algorithm]
  run = RunDir(out, algorithm, config, resume)
  spec = module.agent_spec(config, num_actions(config.env_id))
  optimizer = ppo.make_optimizer(config, ppo.num_updates(config)) if algorithm == "ppo" else dqn.make_optimizer(config)
  state = module.init_state(spec, config, optimizer)
  if resume:
    state = run.resume(state)

  def save(state, step, wall):
    # Checked here rather than per update: one pass over the params per checkpoint costs nothing.
    if not all(np.isfinite(leaf).all() for leaf in jax.tree_util.tree_leaves(jax.device_get(state.params))):
      last = run.latest_step()
      kept = f"the last good checkpoint (step {last}) is kept" if last is not None else "no checkpoint was saved yet"
      raise UserError(
        f"the parameters became non-finite before step {step}; {kept} in {run.path}; lower lr or max_grad_norm"
      )
    run.save(step, state, dict(step=step, wall_time=wall))
    plot_curve(
      run.curve_file,
      run.path / "curve.png",
      ["episode_return"],
      f"{SAVED_AS[algorithm]} {config.env_id}",
      "mean score of the last 20 games",
      "agent steps (4 frames each)",
    )
    save_agent(
      run.path / "agent",
      Agent(
        spec,
        state.params,
        plain(
          dict(
            algorithm=SAVED_AS[algorithm],
            steps=step,
            wall_time_s=round(wall, 1),
            seed=config.seed,
            config=to_dict(config),
          )
        ),
      ),
    )

  state, _ = drive(
    run,
    module.updates(config, spec, state),
    state,
    end=module.end_step(config),
    log_every=config.log_every,
    checkpoint_every=config.checkpoint_every,
    save=save,
    desc=f"{algorithm.upper()} {config.env_id}",
    progress=progress,
    postfix=("episode_return", "epsilon"),
  )
  run.close()
  return Agent(spec, jax.device_get(state.params))


def run(args: argparse.Namespace) -> None:
  """Runs the subcommand."""
  algorithm, config = load_training_config(args.config, args.overrides)
  train_agent(algorithm, config, args.out, resume=args.resume, progress=not args.quiet)
  print(f"trained {algorithm} on {config.env_id}: agent in {args.out}/agent, curve in {args.out}/curve.png")
