"""The generator as data: its spec, its variables, self-describing checkpoints, and what it fits.

`generator.json` records the architecture (latent size, widths, channels, upsampling
formulation), the image size, and which agent, game and dataset it was trained for,
so later stages can refuse to mix a generator with another agent (`check_same_agent`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxprobe.agents.agent import Agent, fingerprint
from jaxprobe.bundle import read_spec, read_tree, save_bundle
from jaxprobe.collection.dataset import Dataset
from jaxprobe.envs import COLOUR_STACK_SHAPE
from jaxprobe.errors import UserError
from jaxprobe.generator.autoencoder import Generator, to_agent_view
from jaxprobe.generator.prior import GaussianMixture

FORMAT_VERSION = 1
SPEC_FILE = "generator.json"


@dataclasses.dataclass(frozen=True)
class GeneratorSpec:
  """What a generator checkpoint needs to be rebuilt, and the agent and game it was trained for."""

  latent_dim: int = 100
  widths: tuple[int, ...] = (32, 64, 128, 256)
  channels: int = COLOUR_STACK_SHAPE[-1]
  upsample: str = "transpose"
  image_shape: tuple[int, ...] = COLOUR_STACK_SHAPE
  env_id: str = ""
  agent_fingerprint: str = ""

  def network(self, conv_impl: str = "auto") -> Generator:
    """The Flax module; `conv_impl` changes how it computes, never its parameters."""
    return Generator(
      latent_dim=self.latent_dim,
      widths=self.widths,
      channels=self.channels,
      upsample=self.upsample,
      conv_impl=conv_impl,
    )

  def init(self, key: jax.Array) -> dict:
    """Fresh variables `{"params", "batch_stats"}` drawn with `key`."""
    return self.network().init({"params": key, "latent": key}, np.zeros((1, *self.image_shape), np.float32))


@dataclasses.dataclass(frozen=True)
class GeneratorBundle:
  """A generator: its spec, variables `{"params", "batch_stats"}` and training metadata."""

  spec: GeneratorSpec
  variables: Any  # {"params": ..., "batch_stats": ...}
  metadata: dict = dataclasses.field(default_factory=dict)
  prior: GaussianMixture | None = None  # of the standardised latents u (`generator.prior`, `jaxprobe fit-prior`)

  def latent_coordinates(self) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) of the encoder's means on real states: where the data lies in latent space.

    The KL term is weak at the paper's lambda, so this aggregated posterior is far from
    N(0, I); searches start and are regularised in its standardised coordinates. A
    generator saved without them gets the identity (0, 1).
    """
    d = self.spec.latent_dim
    mean = np.asarray(self.metadata.get("latent_mean", np.zeros(d)), np.float32)
    std = np.asarray(self.metadata.get("latent_std", np.ones(d)), np.float32)
    return mean, std

  def decode(self, variables: Any, z: jax.Array, conv_impl: str = "auto") -> tuple[jax.Array, jax.Array]:
    """Latents z `(N, latent_dim)` -> (colour stacks `(N, 84, 84, 12)` in [0, 1], the agent's view
    `(N, 4, 84, 84)` in [0, 255]), in eval mode. `variables` is an argument, not `self.variables`,
    so that a jitted caller passes them as data rather than baking them into the program."""
    colour = self.spec.network(conv_impl).apply(variables, z, method=Generator.decode)
    return colour, to_agent_view(colour)

  def reconstruct(self, variables: Any, colour: jax.Array, conv_impl: str = "auto") -> dict[str, jax.Array]:
    """G(E(x)) of colour stacks `(N, 84, 84, 12)` uint8, eval mode: the network's outputs
    (`colour` in [0, 1], `agent_view` in [0, 255], `mean`, `logvar`, `z`)."""
    return self.spec.network(conv_impl).apply(variables, jnp.asarray(colour, jnp.float32) / 255.0, train=False)


def check_same_game(agent: Agent, dataset: Dataset) -> None:
  """A UserError unless `dataset` holds states of the game `agent` plays."""
  game = dataset.manifest["agent"]["env_id"]
  if game != agent.spec.env_id:
    raise UserError(
      f"dataset {dataset.path} holds {game} states, the agent plays {agent.spec.env_id}; "
      "use a dataset of the agent's game"
    )


def check_same_agent(agent: Agent, dataset: Dataset | None = None, generator: GeneratorBundle | None = None) -> None:
  """A UserError unless `dataset` was collected and `generator` trained for `agent` (same params)."""
  ours = fingerprint(agent.params)
  if dataset is not None:
    check_same_game(agent, dataset)
  if dataset is not None and dataset.agent_fingerprint != ours:
    raise UserError(
      f"dataset {dataset.path} was collected by another agent (fingerprint "
      f"{dataset.agent_fingerprint}, this agent's is {ours}); collect a dataset with this agent"
    )
  if generator is not None:
    if generator.spec.env_id != agent.spec.env_id:
      raise UserError(
        f"the generator was trained on {generator.spec.env_id} but the agent plays "
        f"{agent.spec.env_id}; use a generator trained for this agent"
      )
    if generator.spec.agent_fingerprint != ours:
      raise UserError(
        f"the generator was trained for another agent (fingerprint {generator.spec.agent_fingerprint}, "
        f"this agent's is {ours}); use the agent it was trained with"
      )


STORAGE_DTYPE = "bfloat16"  # of saved parameters: half the size; measured numbers move by < 0.2 points (docs)


def save_generator(path: str | Path, bundle: GeneratorBundle) -> Path:
  """Writes `bundle` to directory `path`, replacing an earlier generator there only once complete.

  Parameters are stored as bfloat16 and read back as float32 (`load_generator`); batch norm
  statistics and the latent prior stay float32, and so do training checkpoints (`runs`).
  """
  spec = dict(
    format_version=FORMAT_VERSION,
    **dataclasses.asdict(bundle.spec),
    param_storage=STORAGE_DTYPE,
    metadata=bundle.metadata,
  )
  stored = dict(jax.device_get(bundle.variables))
  stored["params"] = jax.tree_util.tree_map(lambda a: jnp.asarray(a, STORAGE_DTYPE), stored["params"])
  if bundle.prior is not None:  # float32: its Cholesky factors need the precision
    stored = dict(stored, prior=jax.tree_util.tree_map(np.asarray, bundle.prior._asdict()))
  return save_bundle(path, stored, SPEC_FILE, spec, "a generator checkpoint")


def load_generator(path: str | Path, expect: GeneratorSpec | None = None, verify: bool = True) -> GeneratorBundle:
  """Loads a generator, its parameters checked against their saved checksum (unless `verify` is False),
  for finite values and against the network its spec describes; with `expect`, refuses one whose
  latent size or image size differ."""
  meta = read_spec(path, SPEC_FILE, "generator checkpoint", FORMAT_VERSION)
  try:
    spec = GeneratorSpec(
      latent_dim=int(meta["latent_dim"]),
      widths=tuple(meta["widths"]),
      channels=int(meta["channels"]),
      upsample=meta["upsample"],
      image_shape=tuple(meta["image_shape"]),
      env_id=meta["env_id"],
      agent_fingerprint=meta["agent_fingerprint"],
    )
  except (KeyError, TypeError, ValueError) as e:
    raise UserError(f"generator checkpoint {path}: {SPEC_FILE} lacks a valid field ({e})") from None
  if spec.image_shape != COLOUR_STACK_SHAPE:
    raise UserError(
      f"generator checkpoint {path} makes {'x'.join(map(str, spec.image_shape))} images; jaxprobe's "
      f"agents read {'x'.join(map(str, COLOUR_STACK_SHAPE))} colour stacks; use a generator trained by "
      "jaxprobe"
    )
  if expect is not None:
    for field in ("latent_dim", "image_shape", "widths", "upsample"):
      if getattr(spec, field) != getattr(expect, field):
        raise UserError(
          f"generator checkpoint {path} has {field} {getattr(spec, field)}, the config says "
          f"{getattr(expect, field)}; use a matching config or another checkpoint"
        )
  variables = dict(read_tree(path, "generator checkpoint", meta.get("params_sha256"), verify))
  prior = variables.pop("prior", None)
  want = dict(jax.tree_util.tree_flatten_with_path(jax.eval_shape(spec.init, jax.random.key(0)))[0])
  got = dict(jax.tree_util.tree_flatten_with_path(variables)[0])
  for key in sorted(set(want) | set(got), key=jax.tree_util.keystr):
    if key not in want or key not in got or tuple(want[key].shape) != np.shape(got[key]):
      name = jax.tree_util.keystr(key)
      found = f"has shape {np.shape(got[key])}" if key in got else "lacks it"
      expected = f"expects {tuple(want[key].shape)}" if key in want else "has no such parameter"
      raise UserError(
        f"generator checkpoint {path}: parameter {name}: the checkpoint {found}, the network its {SPEC_FILE} "
        f"describes (latent_dim {spec.latent_dim}, widths {list(spec.widths)}) {expected}; fix {SPEC_FILE} "
        "or save the generator again"
      )
  if prior is not None:
    prior = GaussianMixture(**{k: np.asarray(prior[k], np.float32) for k in GaussianMixture._fields})
    if prior.means.shape[-1] != spec.latent_dim:
      raise UserError(f"generator checkpoint {path}: its latent prior does not fit latent_dim {spec.latent_dim}")
  as_float32 = lambda a: np.asarray(jnp.asarray(a, jnp.float32))  # stored as bfloat16 or (older) float32
  return GeneratorBundle(spec, jax.tree_util.tree_map(as_float32, variables), meta.get("metadata", {}), prior)
