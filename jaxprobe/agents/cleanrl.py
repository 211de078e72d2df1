"""Import CleanRL JAX Atari checkpoints (`.cleanrl_model`) as jaxprobe agents.

CleanRL writes `flax.serialization.to_bytes(...)` of:
- `dqn_atari_jax.py`: the QNetwork params `{'params': {Conv_0..2, Dense_0, Dense_1}}`;
- `ppo_atari_envpool_xla_jax_scan.py`: `[vars(args), [torso, actor, critic]]`, which
  msgpack stores as dicts keyed '0', '1', '2'.
The files are msgpack data: they are read without running any CleanRL code.
"""

from __future__ import annotations

from pathlib import Path

import flax.serialization
import numpy as np

from jaxprobe.agents.agent import Agent, AgentSpec, fit_params
from jaxprobe.envs import check_env_id, envpool_id_in
from jaxprobe.errors import UserError


def _unmsgpack(path: Path) -> dict:
  try:
    data = flax.serialization.msgpack_restore(path.read_bytes())
  except Exception as e:  # msgpack raises several types for damaged bytes
    raise UserError(
      f"{path} is not a readable CleanRL checkpoint ({type(e).__name__}); was the download complete?"
    ) from None
  if not isinstance(data, dict):
    raise UserError(f"{path} is not a CleanRL checkpoint: it holds a {type(data).__name__}")
  return data


def load_cleanrl(path: str | Path, env_id: str | None = None) -> Agent:
  """A CleanRL DQN or PPO Atari checkpoint as an `Agent`; the action count comes from the file."""
  path = Path(path)
  data = _unmsgpack(path)
  if set(data) == {"params"}:
    params, kind, args, layout = data, "q", {}, "dqn_atari_jax"
    num_actions = np.shape(data["params"].get("Dense_1", {}).get("kernel", np.zeros((0, 0))))[-1]
  elif set(data) == {"0", "1"} and isinstance(data["1"], dict) and set(data["1"]) == {"0", "1", "2"}:
    args = data["0"] if isinstance(data["0"], dict) else {}
    torso, actor, critic = (data["1"][k].get("params", {}) for k in "012")
    try:
      params = {"params": dict(torso, policy=actor["Dense_0"], value=critic["Dense_0"])}
    except KeyError:
      raise UserError(f"{path}: PPO checkpoint lacks the actor or critic Dense_0 layer") from None
    kind, layout = "actor_critic", "ppo_atari_envpool_xla_jax_scan"
    num_actions = np.shape(actor["Dense_0"].get("kernel", np.zeros((0, 0))))[-1]
  elif "model_weights" in data:
    raise UserError(
      f"{path} is a CleanRL C51 (distributional) checkpoint, which jaxprobe does "
      "not read yet; use a DQN or PPO checkpoint"
    )
  else:
    raise UserError(f"{path} is not a CleanRL DQN or PPO checkpoint (top-level keys: {sorted(data)[:5]})")
  env_id = env_id or args.get("env_id") or envpool_id_in(str(path.absolute()))
  if env_id is None:
    raise UserError(f"{path} does not say which game it plays: pass the env id (e.g. --env Pong-v5)")
  spec = AgentSpec(kind=kind, num_actions=int(num_actions), env_id=check_env_id(env_id))
  metadata = dict(
    source=f"CleanRL {layout}",
    source_file=str(path.absolute()),
    cleanrl_args={k: v for k, v in args.items() if isinstance(v, (str, int, float, bool))},
  )
  return Agent(spec, fit_params(spec, params, f"CleanRL checkpoint {path}"), metadata)
