"""Import Dopamine's JAX agents: DQN, C51 / Rainbow, QR-DQN and IQN checkpoints (`ckpt.N`).

Dopamine's runner writes, every iteration, `<base_dir>/checkpoints/ckpt.N`: a pickle of the agent's
`bundle_and_checkpoint` dict (`online_params`, `target_params`, `optimizer_state`, `state`,
`training_steps`, plus the runner's `current_iteration` and `logs`), and a
`sentinel_checkpoint_complete.N` once the file is whole. The pickle is read here by a restricted
unpickler (`pickled.RestrictedUnpickler`): numpy arrays, jax arrays (rebuilt as numpy), flax's
`FrozenDict` (as a dict) and plain containers; optax's optimizer state is dropped unread. Any
other name refuses the file before anything is run.

The online network's params are mapped to jaxprobe's `AgentSpec`, Dopamine's differences stated:

- Dopamine's convolutions are SAME-padded, so its first dense layer is 7744 -> 512 (ours: 3136);
  the layer names (`Conv_0..2`, `Dense_0..`) and HWIO kernels are Flax's, as ours.
- Its networks read one unbatched (84, 84, 4) state, channels last, and `vmap` over a batch;
  jaxprobe's read (N, 4, 84, 84) and transpose: the same numbers, flattened in the same H, W, C order.
- DQN: `Dense_1` gives Q. C51 and Rainbow (`RainbowNetwork`): `Dense_1` gives A x K logits,
  action-major; Q is the expectation over the support linspace(-vmax, vmax, K), vmax = 10 as
  Dopamine's configs set it (the checkpoint does not record it; another vmax scales every Q-value
  and leaves the greedy action as it is). QR-DQN (`QuantileNetwork`): the same layers read as K
  quantiles, Q their mean. The two are told apart by their atoms per action, Dopamine's
  settings: 51 for C51 and Rainbow, 200 for QR-DQN (any other count is refused, as it more likely
  means the wrong game). IQN: Q is the mean over 32 quantile levels (Dopamine's
  `num_quantile_samples`) drawn once with a fixed key (`nature_cnn.iqn_taus`) and stored with the
  agent (`AgentSpec.taus`); Dopamine draws fresh levels at every step.
- Checkpoints of flax's pre-Linen API (Dopamine before March 2021) name submodules in one count
  across types (`Conv_0..2, Dense_3, Dense_4`) with no `params` level: renumbered per type, as
  flax's `convert_pre_linen` does.
- Dopamine trains with sticky actions (0.25) and rewards clipped to [-1, 1], without no-op starts
  or FIRE on reset; its frames
  are ALE's grayscale max-pooled over the last two frames and resized with OpenCV's INTER_AREA,
  as envpool's. The metadata records this.

Dopamine's TensorFlow agents (`tf_ckpt-N.*`, and the trained agents Dopamine publishes) are not
read: their weights are TensorFlow variables.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import numpy as np

from jaxprobe.agents.agent import Agent, AgentSpec, fit_params
from jaxprobe.agents.nature_cnn import iqn_taus
from jaxprobe.agents.pickled import NUMERIC_KINDS, NUMPY, RestrictedUnpickler, array_from_state, load_checked
from jaxprobe.envs import check_env_id, envpool_id_in
from jaxprobe.envs import num_actions as game_actions
from jaxprobe.errors import UserError

VMAX = 10.0  # Dopamine's c51.gin and rainbow.gin: JaxRainbowAgent.vmax
C51_ATOMS = 51  # their num_atoms
QR_ATOMS = 200  # quantile.gin: JaxQuantileAgent.num_atoms
TRAINING_DIFFERENCES = (
  "Dopamine: sticky actions (repeat probability 0.25) and rewards clipped to [-1, 1] in training, no no-op starts, "
  "no FIRE on reset; frames are ALE's grayscale max-pooled over two frames and resized with INTER_AREA, as envpool's"
)
TENSORFLOW = (
  "is a Dopamine TensorFlow agent's checkpoint (its weights are in tf_ckpt-{n} files); jaxprobe reads "
  "Dopamine's JAX agents (dopamine.jax.agents: DQN, C51, Rainbow, QR-DQN, IQN) only"
)
CKPT = re.compile(r"ckpt\.(\d+)$")


class _Dropped:
  """What optax's optimizer-state classes resolve to: built from anything, then discarded."""

  def __new__(cls, *args: Any, **kwargs: Any) -> _Dropped:
    return object.__new__(cls)

  def __init__(self, *args: Any, **kwargs: Any):
    pass


def _frozen_dict(*args: Any) -> dict:
  """flax's `FrozenDict` pickles as `FrozenDict(dict)`: read as that dict."""
  if len(args) > 1 or (args and not isinstance(args[0], dict)):
    raise UserError("a FrozenDict record is malformed")
  return dict(args[0]) if args else {}


def _jax_array(fun: Any, args: Any, array_state: Any, _aval_state: Any) -> np.ndarray:
  """`jax._src.array._reconstruct_array`: the numpy array a jax array pickles as."""
  if fun is not NUMPY[("numpy._core.multiarray", "_reconstruct")] or not isinstance(args, tuple):
    raise UserError("a jax array record is malformed")
  return array_from_state(fun(*args), array_state)


class _Unpickler(RestrictedUnpickler):
  allowed = {
    **NUMPY,
    ("collections", "OrderedDict"): dict,
    ("flax.core.frozen_dict", "FrozenDict"): _frozen_dict,
    ("jax._src.array", "_reconstruct_array"): _jax_array,
  }
  what = "arrays and plain containers"

  def resolve(self, module: str, name: str) -> Any:
    if module.split(".")[0] == "optax" and name[:1].isupper():  # optimizer state: not needed
      return _Dropped
    return super().resolve(module, name)

  def build(self, obj: Any, state: Any) -> Any:
    return obj if isinstance(obj, _Dropped) else super().build(obj, state)


def _checkpoint_file(path: Path) -> Path:
  """The `ckpt.N` a path names: the file itself, or a run's (or its `checkpoints/` folder's)
  newest complete one."""
  if path.is_file():
    if (m := re.match(r"tf_ckpt-(\d+)", path.name)) is not None:
      raise UserError(f"{path} {TENSORFLOW.format(n=m.group(1))}")
    return path
  for folder in (path, path / "checkpoints"):
    numbers = [int(m.group(1)) for f in folder.glob("ckpt.*") if (m := CKPT.match(f.name)) and f.is_file()]
    complete = [n for n in numbers if (folder / f"sentinel_checkpoint_complete.{n}").exists()]
    if numbers:
      return folder / f"ckpt.{max(complete or numbers)}"
    if tf := sorted(folder.glob("tf_ckpt-*.index")):
      raise UserError(f"{path} {TENSORFLOW.format(n=tf[-1].name.split('-')[1].split('.')[0])}")
  raise UserError(f"{path} holds no Dopamine checkpoint (ckpt.N files, or a checkpoints/ folder of them)")


def is_dopamine(path: Path) -> bool:
  """Whether `path` looks like a Dopamine checkpoint: a `ckpt.N` or `tf_ckpt-N.*` file, or a folder
  of them (directly or in `checkpoints/`)."""
  names = lambda folder: [f.name for f in folder.iterdir()] if folder.is_dir() else []
  if path.is_file():
    return bool(CKPT.match(path.name) or path.name.startswith("tf_ckpt-"))
  return any(CKPT.match(n) or n.startswith("tf_ckpt-") for n in names(path) + names(path / "checkpoints"))


def read_bundle(path: Path) -> dict:
  """The dict a Dopamine `ckpt.N` file holds, read with the restricted unpickler."""
  try:
    data = path.read_bytes()
  except OSError as e:
    raise UserError(f"cannot read {path}: {e.strerror or e}") from None
  bundle = load_checked(
    lambda: _Unpickler(io.BytesIO(data), str(path)),
    str(path),
    "is not a readable Dopamine checkpoint ({error}); was the copy complete?",
  )
  if not isinstance(bundle, dict):
    raise UserError(f"{path} holds a {type(bundle).__name__}, not a Dopamine checkpoint's dict")
  if "online_params" not in bundle:
    m = CKPT.match(path.name)
    if m and "training_steps" in bundle:
      raise UserError(f"{path} {TENSORFLOW.format(n=m.group(1))}")
    keys = ", ".join(ascii(k)[:40] for k in list(bundle)[:8])
    raise UserError(f"{path} is not a Dopamine JAX agent's checkpoint (it has no online_params; keys: {keys})")
  return bundle


def convert_pre_linen(params: dict) -> dict:
  """Pre-Linen submodule names (`Conv_0, Conv_1, Conv_2, Dense_3, Dense_4`: one count across
  types) renumbered per type (`Dense_0, Dense_1`), as Linen names them."""
  counts: dict[str, int] = {}
  renamed = {}
  for name in sorted(params, key=lambda n: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", n)]):
    m = re.fullmatch(r"(.+)_(\d+)", name)
    if m is None:
      renamed[name] = params[name]
      continue
    kind = m.group(1)
    renamed[f"{kind}_{counts.get(kind, 0)}"] = params[name]
    counts[kind] = counts.get(kind, 0) + 1
  return renamed


def check_tree(tree: Any, where: str, depth: int = 0) -> None:
  """A parameter tree: dicts of string keys, at most 4 deep, whose leaves are real numeric arrays."""
  if isinstance(tree, np.ndarray) and tree.dtype.kind in NUMERIC_KINDS:
    return
  if not isinstance(tree, dict) or depth > 4 or not all(isinstance(k, str) for k in tree):
    raise UserError(f"{where} is not a parameter tree (dicts of named numeric arrays)")
  for value in tree.values():
    check_tree(value, where, depth + 1)


def _shape(params: dict, layer: str) -> tuple[int, ...]:
  kernel = params.get(layer, {}).get("kernel") if isinstance(params.get(layer), dict) else None
  return tuple(np.shape(kernel)) if kernel is not None else ()


def load_dopamine(path: str | Path, env_id: str | None = None) -> Agent:
  """A Dopamine JAX DQN, C51, Rainbow, QR-DQN or IQN checkpoint (`ckpt.N`, or a run folder) as an `Agent`."""
  path = Path(path)
  file = _checkpoint_file(path)
  bundle = read_bundle(file)
  online = bundle["online_params"]
  check_tree(online, f"{file}: online_params")
  pre_linen = "params" not in online
  params = convert_pre_linen(online) if pre_linen else online["params"]
  check_tree(params, f"{file}: online_params['params']")
  layers = sorted(params)
  conv0, dense = _shape(params, "Conv_0"), [_shape(params, f"Dense_{i}") for i in range(3)]
  if conv0[2:3] != (4,):
    raise UserError(
      f"{file}: the network reads {conv0[2:3] or 'no'} frames per state (Conv_0 {conv0}); jaxprobe's agents "
      "read stacks of 4 grayscale 84x84 frames (Dopamine's Atari agents)"
    )
  env_id = env_id or envpool_id_in(str(file.absolute()))
  if env_id is None:
    raise UserError(f"{file} does not say which game it plays: pass --env (e.g. Pong-v5), or keep the game in the path")
  env_id = check_env_id(env_id)
  num_actions = game_actions(env_id)
  torso = {7744: "SAME", 3136: "VALID"}
  head: dict[str, Any] = {}
  if (
    layers == ["Conv_0", "Conv_1", "Conv_2", "Dense_0", "Dense_1", "Dense_2"]
    and len(dense[0]) == 2
    and dense[0][1] in torso
    and dense[1] == (dense[0][1], 512)
    and dense[2][:1] == (512,)
  ):
    family, padding, outputs = "IQN", torso[dense[0][1]], dense[2][1]
    head = dict(tau_embedding=dense[0][0], taus=tuple(float(t) for t in iqn_taus(32)))
  elif layers == ["Conv_0", "Conv_1", "Conv_2", "Dense_0", "Dense_1"] and dense[0][:1] in ((7744,), (3136,)):
    padding, outputs = torso[dense[0][0]], dense[1][-1] if dense[1] else 0
    atoms = outputs // num_actions if outputs % num_actions == 0 else 0
    if outputs == num_actions:
      family = "DQN"
    elif atoms == C51_ATOMS:
      family, head = "C51 / Rainbow", dict(support=tuple(float(z) for z in np.linspace(-VMAX, VMAX, atoms)))
    elif atoms == QR_ATOMS:
      family, head = "QR-DQN", dict(quantiles=atoms)
    else:
      raise UserError(
        f"{file}: its last layer has {outputs} outputs, which is neither {env_id}'s {num_actions} Q-values nor "
        f"{C51_ATOMS} atoms (C51, Rainbow) or {QR_ATOMS} quantiles (QR-DQN) per action, Dopamine's settings; "
        "give the game the agent was trained on with --env"
      )
  else:
    shapes = ", ".join(f"{k} {_shape(params, k)}" for k in layers)
    raise UserError(
      f"{file} is not a Dopamine DQN, C51, Rainbow, QR-DQN or IQN network on Atari frames ({shapes}); full "
      "Rainbow's noisy and dueling heads and the IMPALA network are not read"
    )
  if outputs != num_actions and family in ("DQN", "IQN"):
    raise UserError(
      f"{file} chooses among {outputs} outputs, {env_id} has {num_actions} actions (its "
      "minimal action set); give the game the agent was trained on with --env"
    )
  state = bundle.get("state")
  if isinstance(state, np.ndarray) and state.shape[-3:] != (84, 84, 4):
    raise UserError(f"{file}: the agent's states have shape {state.shape}; jaxprobe reads (84, 84, 4) stacks")
  spec = AgentSpec(kind="q", num_actions=num_actions, env_id=env_id, padding=padding, **head)
  metadata: dict[str, Any] = dict(
    source=f"Dopamine JAX {family}" + (" (pre-Linen parameter names)" if pre_linen else ""),
    source_file=str(file.absolute()),
    training_differences=TRAINING_DIFFERENCES,
  )
  for key in ("training_steps", "current_iteration"):
    if isinstance(bundle.get(key), (int, np.integer)):
      metadata[key] = int(bundle[key])
  if "support" in head:
    metadata["support"] = f"linspace(-{VMAX:g}, {VMAX:g}, {atoms}): Dopamine's vmax, not stored in the checkpoint"
  if "tau_embedding" in head:
    metadata["quantile_levels"] = f"{len(spec.taus)} levels drawn once with a fixed key (Dopamine: fresh each step)"
  return Agent(spec, fit_params(spec, {"params": params}, f"Dopamine checkpoint {file}"), metadata)
