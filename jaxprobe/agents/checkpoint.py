"""Self-describing agent checkpoints (orbax) and `load_agent` for every format we read.

An agent directory holds:
    agent.json   format version, network kind, action count, env id, observation
                 format, and free-form metadata (how it was trained, its scores)
    params/      the params pytree, written by orbax-checkpoint

so `load_agent(path)` needs nothing else. CleanRL `.cleanrl_model` files, Stable-Baselines3
zips and Dopamine JAX checkpoints load through the same call (`jaxprobe.agents.cleanrl`,
`.sb3`, `.dopamine`).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from jaxprobe.agents.agent import KINDS, Agent, AgentSpec, fit_params
from jaxprobe.agents.cleanrl import load_cleanrl
from jaxprobe.agents.dopamine import is_dopamine, load_dopamine
from jaxprobe.agents.sb3 import load_sb3
from jaxprobe.bundle import check_finite, read_tree, save_bundle
from jaxprobe.bundle import read_spec as bundle_spec
from jaxprobe.errors import UserError

FORMAT_VERSION = 1
SPEC_FILE = "agent.json"


def save_agent(path: str | Path, agent: Agent) -> Path:
  """Writes `agent` to directory `path`, replacing an earlier agent there only once the new one is complete."""
  spec = dict(format_version=FORMAT_VERSION, **agent.spec.to_json(), metadata=agent.metadata)
  return save_bundle(path, agent.params, SPEC_FILE, spec, "an agent checkpoint")


def read_spec(path: str | Path) -> tuple[AgentSpec, dict[str, Any]]:
  """The spec and metadata of an agent directory, without loading its params."""
  return spec_of(path, bundle_spec(path, SPEC_FILE, "agent checkpoint", FORMAT_VERSION))


def spec_of(path: str | Path, meta: dict) -> tuple[AgentSpec, dict[str, Any]]:
  """The spec and metadata of an agent directory from its agent.json."""
  try:
    spec = AgentSpec.from_json(meta)
  except (KeyError, TypeError, ValueError) as e:
    raise UserError(
      f"agent checkpoint {path}: {SPEC_FILE} lacks a valid field ({e}); "
      f"expected kind in {KINDS}, num_actions, env_id, obs_format"
    ) from None
  return spec, meta.get("metadata", {})


def load_agent(path: str | Path, env_id: str | None = None, verify: bool = True) -> Agent:
  """Loads a jaxprobe agent directory, a CleanRL `.cleanrl_model` file, a Stable-Baselines3 `.zip`
  or a Dopamine JAX checkpoint (`ckpt.N`, or its run's folder).

  A jaxprobe agent's parameters must match the checksum saved with them (unless `verify` is
  False); every format's must fit the network and be finite. `env_id` is needed only for
  CleanRL DQN, SB3 and Dopamine files whose path does not name the game.
  """
  path = Path(path)
  if not path.exists():
    raise UserError(
      f"no agent checkpoint at {path}: give a jaxprobe agent directory, a CleanRL .cleanrl_model file, a "
      "Stable-Baselines3 .zip or a Dopamine ckpt.N"
    )
  dopamine = is_dopamine(path) and not (path / SPEC_FILE).exists()
  if path.is_file() or dopamine:
    if dopamine:
      agent = load_dopamine(path, env_id)
    elif path.suffix == ".zip" or zipfile.is_zipfile(path):
      agent = load_sb3(path, env_id)
    else:
      agent = load_cleanrl(path, env_id)
    check_finite(agent.params, f"agent checkpoint {path}")
    return agent
  meta = bundle_spec(path, SPEC_FILE, "agent checkpoint", FORMAT_VERSION)
  spec, metadata = spec_of(path, meta)
  params = read_tree(path, "agent checkpoint", meta.get("params_sha256"), verify)
  return Agent(spec, fit_params(spec, params, f"agent checkpoint {path}"), metadata)
