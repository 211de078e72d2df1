"""Self-describing generator checkpoints: `load_generator(path)` rebuilds the network alone.

`generator.json` records the architecture (latent size, widths, channels, upsampling
formulation), the image size, and which agent, game and dataset it was trained for,
so later stages can refuse to mix a generator with another agent.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxprobe.bundle import read_spec, read_tree, save_bundle
from jaxprobe.errors import UserError
from jaxprobe.generator.networks import Generator

FORMAT_VERSION = 1
SPEC_FILE = "generator.json"
IMAGE_SHAPE = (84, 84, 12)


@dataclasses.dataclass(frozen=True)
class GeneratorSpec:
  latent_dim: int = 100
  widths: tuple[int, ...] = (32, 64, 128, 256)
  channels: int = 12
  upsample: str = "subpixel"
  image_shape: tuple[int, ...] = IMAGE_SHAPE
  env_id: str = ""
  agent_fingerprint: str = ""

  def network(self, conv_impl: str = "auto") -> Generator:
    return Generator(latent_dim=self.latent_dim, widths=self.widths, channels=self.channels,
                     upsample=self.upsample, conv_impl=conv_impl)

  def init(self, key: jax.Array) -> dict:
    return self.network().init({"params": key, "latent": key}, np.zeros((1, *self.image_shape), np.float32))


@dataclasses.dataclass(frozen=True)
class GeneratorBundle:
  spec: GeneratorSpec
  variables: Any            # {"params": ..., "batch_stats": ...}
  metadata: dict = dataclasses.field(default_factory=dict)

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

  def decode(self, z, conv_impl: str = "auto"):
    """Latents `(N, latent_dim)` -> colour stacks `(N, 84, 84, 12)` in [0, 1] (eval mode)."""
    return self.spec.network(conv_impl).apply(self.variables, z, method=Generator.decode)


def save_generator(path: str | Path, bundle: GeneratorBundle) -> Path:
  spec = dict(format_version=FORMAT_VERSION, **dataclasses.asdict(bundle.spec), metadata=bundle.metadata)
  return save_bundle(path, bundle.variables, SPEC_FILE, spec, "a generator checkpoint")


def load_generator(path: str | Path, expect: GeneratorSpec | None = None) -> GeneratorBundle:
  """Loads a generator; with `expect`, refuses one whose latent size or image size differ."""
  meta = read_spec(path, SPEC_FILE, "generator checkpoint", FORMAT_VERSION)
  try:
    spec = GeneratorSpec(latent_dim=int(meta["latent_dim"]), widths=tuple(meta["widths"]),
                         channels=int(meta["channels"]), upsample=meta["upsample"],
                         image_shape=tuple(meta["image_shape"]), env_id=meta["env_id"],
                         agent_fingerprint=meta["agent_fingerprint"])
  except (KeyError, TypeError, ValueError) as e:
    raise UserError(f"generator checkpoint {path}: {SPEC_FILE} lacks a valid field ({e})") from None
  if spec.image_shape != IMAGE_SHAPE:
    raise UserError(f"generator checkpoint {path} makes {'x'.join(map(str, spec.image_shape))} images; jaxprobe's "
                    f"agents read {'x'.join(map(str, IMAGE_SHAPE))} colour stacks; use a generator trained by jaxprobe")
  if expect is not None:
    for field in ("latent_dim", "image_shape", "widths", "upsample"):
      if getattr(spec, field) != getattr(expect, field):
        raise UserError(f"generator checkpoint {path} has {field} {getattr(spec, field)}, the config says "
                        f"{getattr(expect, field)}; use a matching config or another checkpoint")
  variables = read_tree(path, "generator checkpoint")
  want = jax.eval_shape(spec.init, jax.random.key(0))
  got_shapes = jax.tree_util.tree_map(np.shape, variables)
  if jax.tree_util.tree_map(lambda a: tuple(a.shape), want) != got_shapes:
    raise UserError(f"generator checkpoint {path}: its parameters do not fit the network its "
                    f"{SPEC_FILE} describes; save it again")
  return GeneratorBundle(spec, jax.tree_util.tree_map(np.asarray, variables), meta.get("metadata", {}))
