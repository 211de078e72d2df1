"""Import Stable-Baselines3 Atari agents (`model.zip`, as `model.save` and the RL Zoo write them).

An SB3 zip holds `data` (JSON: the observation and action spaces, the policy's settings) and
`policy.pth` (`torch.save` of the policy's `state_dict`, read by `torch_file` as data). Its
`CnnPolicy` is the Nature CNN jaxprobe's networks use, in PyTorch's layouts:

- `features_extractor.cnn.{0,2,4}`: convolutions with OIHW kernels (ours: HWIO), VALID padding;
- `features_extractor.linear.0`: 3136 -> 512, its inputs flattened in C, H, W order (ours:
  H, W, C, so the rows are permuted);
- PPO and A2C (`ActorCriticCnnPolicy`): `action_net` (logits) and `value_net` over the shared
  torso; DQN (`CnnPolicy` of `stable_baselines3.dqn`): `q_net.q_net.0` over
  `q_net.features_extractor` (the target network is ignored); QR-DQN (sb3-contrib):
  `quantile_net.quantile_net.0` gives K quantiles per action, read by sb3-contrib as
  (quantile, action) and reordered to jaxprobe's action-major layout, Q their mean.

Observations are channel-first stacks of 4 grayscale 84x84 frames divided by 255 inside the
policy, as in jaxprobe. The frames themselves are made differently: SB3's `AtariWrapper`
max-pools the last two RGB frames and converts the result to gray with OpenCV, envpool
max-pools ALE's own grayscale screens, so a pixel can differ by a few levels; SB3 also trains
with terminal on life loss and clipped rewards (jaxprobe plays the real game). Both use 4-frame
skip, up to 30 no-op starts, FIRE on reset, the minimal action set and no sticky actions
(`NoFrameskip-v4`; envpool's v5 default). The agent's metadata records this.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from jaxprobe.agents.agent import Agent, AgentSpec, fit_params
from jaxprobe.agents.torch_file import load_torch_file
from jaxprobe.envs import check_env_id, envpool_id_in
from jaxprobe.envs import num_actions as game_actions
from jaxprobe.errors import UserError

TORSO = {"cnn.0": "Conv_0", "cnn.2": "Conv_1", "cnn.4": "Conv_2", "linear.0": "Dense_0"}
TRAINING_DIFFERENCES = (
  "SB3 AtariWrapper: RGB frames max-pooled, then grayscale by OpenCV (envpool: ALE's grayscale, max-pooled); "
  "terminal on life loss and rewards clipped to their sign in training"
)


def _dense(weight: np.ndarray, bias: np.ndarray) -> dict:
  return {"kernel": weight.T, "bias": bias}


def _torso(state: dict, prefix: str) -> dict:
  """jaxprobe's torso params from an SB3 `NatureCNN` state dict under `prefix`."""
  params = {}
  for theirs, ours in TORSO.items():
    weight, bias = state[f"{prefix}{theirs}.weight"], state[f"{prefix}{theirs}.bias"]
    if ours == "Dense_0":  # rows from (C=64, H=7, W=7) order to (H, W, C)
      out = weight.shape[0]
      weight = weight.reshape(out, 64, 7, 7).transpose(0, 2, 3, 1).reshape(out, -1)
      params[ours] = _dense(weight, bias)
    else:
      params[ours] = {"kernel": weight.transpose(2, 3, 1, 0), "bias": bias}
  return params


def _read_zip(path: Path) -> tuple[dict, dict]:
  """The `data` JSON and the policy's state dict of an SB3 zip, or a UserError."""
  try:
    with zipfile.ZipFile(path) as archive:
      names = set(archive.namelist())
      if not {"data", "policy.pth"} <= names:
        raise UserError(
          f"{path} is a zip file but not a Stable-Baselines3 model (it has no data and policy.pth entries)"
        )
      data, policy = archive.read("data"), archive.read("policy.pth")
  except (zipfile.BadZipFile, EOFError, OSError) as e:
    raise UserError(f"{path} is not a readable zip file ({type(e).__name__}); was the download complete?") from None
  try:
    data = json.loads(data)
  except ValueError:
    raise UserError(f"{path}: its data entry is not JSON; save the model again with SB3") from None
  state = load_torch_file(policy, f"{path} (policy.pth)")
  if not isinstance(data, dict):
    raise UserError(f"{path}: its data entry holds a {type(data).__name__}, not SB3's settings")
  if not isinstance(state, dict) or not all(isinstance(v, np.ndarray) for v in state.values()):
    raise UserError(f"{path}: policy.pth holds a {type(state).__name__}, not a state dict of tensors")
  return data, state


def _check_spaces(path: Path, data: dict) -> int:
  """The action count, after checking the observation space is jaxprobe's (4, 84, 84) uint8 images."""
  obs = data.get("observation_space", {})
  shape, dtype = obs.get("_shape"), obs.get("dtype")
  if shape != [4, 84, 84] or dtype != "uint8":
    raise UserError(
      f"{path}: the policy reads observations of shape {shape} ({dtype}); jaxprobe's agents read stacks of 4 "
      "grayscale 84x84 uint8 frames, channel first (SB3's Atari wrappers with frame_stack 4)"
    )
  if data.get("policy_kwargs", {}).get("normalize_images") is False:
    raise UserError(f"{path}: the policy does not divide images by 255 (normalize_images=False)")
  action = data.get("action_space", {})
  if "discrete" not in action.get(":type:", "").lower() or "n" not in action:
    raise UserError(f"{path}: the action space is {action.get(':type:')}, not Discrete")
  return int(action["n"])


def _one_layer(state: dict, prefix: str, path: Path, what: str) -> tuple[np.ndarray, np.ndarray]:
  """Weight and bias of a head that must be one linear layer, `{prefix}0.*` (extra `net_arch`
  layers, `{prefix}2.*` and on, are refused)."""
  if {k[len(prefix) :].split(".")[0] for k in state if k.startswith(prefix)} != {"0"}:
    raise UserError(f"{path}: the {what} has extra layers (net_arch), which jaxprobe's network lacks")
  return state[f"{prefix}0.weight"], state[f"{prefix}0.bias"]


def load_sb3(path: str | Path, env_id: str | None = None) -> Agent:
  """An SB3 PPO, A2C, DQN or sb3-contrib QR-DQN `CnnPolicy` Atari model as an `Agent`."""
  path = Path(path)
  data, state = _read_zip(path)
  state = {k: np.asarray(v, np.float32) for k, v in state.items()}
  if "features_extractor.cnn.0.weight" in state and "action_net.weight" in state:
    kind, family = "actor_critic", "PPO or A2C (ActorCriticCnnPolicy)"
    if any(k.startswith("mlp_extractor.") for k in state):
      raise UserError(f"{path}: the policy has extra layers after its CNN (net_arch), which jaxprobe's network lacks")
    if "vf_features_extractor.cnn.0.weight" in state and any(
      not np.array_equal(state[f"pi_features_extractor.{k}"], state[f"vf_features_extractor.{k}"])
      for k in ("cnn.0.weight", "linear.0.weight")
    ):
      raise UserError(
        f"{path}: the actor and the critic have separate CNNs (share_features_extractor=False); jaxprobe's "
        "actor-critic shares one"
      )
    torso, heads = "features_extractor.", dict(policy="action_net.", value="value_net.")
  elif "q_net.features_extractor.cnn.0.weight" in state:
    kind, family = "q", "DQN (CnnPolicy)"
    head = _one_layer(state, "q_net.q_net.", path, "Q head")
    torso = "q_net.features_extractor."
  elif "quantile_net.features_extractor.cnn.0.weight" in state:
    kind, family = "q", "QR-DQN (sb3-contrib CnnPolicy)"
    head = _one_layer(state, "quantile_net.quantile_net.", path, "quantile head")
    torso = "quantile_net.features_extractor."
  elif any(k.startswith("mlp_extractor.") or ".q_net.0." in k for k in state):
    raise UserError(f"{path} is an MLP policy; jaxprobe reads Atari agents with SB3's CnnPolicy")
  else:
    raise UserError(f"{path} is not an SB3 CnnPolicy of PPO, A2C, DQN or QR-DQN (parameters: {sorted(state)[:3]} ...)")
  num_actions, quantiles = _check_spaces(path, data), 0
  params = _torso(state, torso)
  if kind == "actor_critic":
    params |= {ours: _dense(state[f"{theirs}weight"], state[f"{theirs}bias"]) for ours, theirs in heads.items()}
  elif family.startswith("QR-DQN"):
    weight, bias = head
    if weight.shape[0] < num_actions or weight.shape[0] % num_actions:
      raise UserError(f"{path}: the quantile head has {weight.shape[0]} outputs, not a multiple of {num_actions}")
    quantiles = weight.shape[0] // num_actions
    # sb3-contrib reads its outputs as (quantile, action); jaxprobe's are action-major.
    order = np.arange(weight.shape[0]).reshape(quantiles, -1).T.reshape(-1)
    params["Dense_1"] = _dense(weight[order], bias[order])
  else:
    params["Dense_1"] = _dense(*head)
  env_id = env_id or envpool_id_in(str(path.absolute()))
  if env_id is None:
    raise UserError(f"{path} does not say which game it plays: pass --env (e.g. Pong-v5), or name the file after it")
  env_id = check_env_id(env_id)
  if num_actions != (game := game_actions(env_id)):
    raise UserError(
      f"{path} chooses among {num_actions} actions, {env_id} has {game} (its minimal action set); give the game "
      "the model was trained on"
    )
  spec = AgentSpec(kind=kind, num_actions=num_actions, env_id=env_id, quantiles=quantiles)
  metadata: dict[str, Any] = dict(
    source=f"Stable-Baselines3 {family}",
    source_file=str(path.absolute()),
    policy_module=str(data.get("policy_class", {}).get("__module__", "")),
    training_differences=TRAINING_DIFFERENCES,
  )
  return Agent(spec, fit_params(spec, {"params": params}, f"SB3 model {path}"), metadata)
