"""One entry point for every agent trainer: a YAML config names its algorithm.

    algorithm, config = load_training_config("configs/seaquest_ppo.yaml", ["total_steps=100000"])
    agent = train_agent(algorithm, config, "runs/seaquest_ppo")
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from jaxprobe.agents import dqn, ppo
from jaxprobe.agents.agent import Agent
from jaxprobe.config import apply_overrides, from_dict, read_yaml
from jaxprobe.envs import check_env_id
from jaxprobe.errors import UserError

ALGORITHMS = {"ppo": (ppo.PPOConfig, ppo.train), "dqn": (dqn.DQNConfig, dqn.train)}


def load_training_config(path: str | Path, overrides: Iterable[str] = ()) -> tuple[str, Any]:
  """(algorithm, config) from a YAML file whose `algorithm` field picks the trainer."""
  values = read_yaml(path)
  algorithm = values.pop("algorithm", None)
  if algorithm not in ALGORITHMS:
    raise UserError(f"{path}: 'algorithm' must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
  cls = ALGORITHMS[algorithm][0]
  config = from_dict(cls, apply_overrides(values, overrides))
  check_env_id(config.env_id)
  return algorithm, config


def train_agent(algorithm: str, config: Any, out: str | Path, resume: bool = False,
                progress: bool = True) -> Agent:
  return ALGORITHMS[algorithm][1](config, out, resume=resume, progress=progress)
