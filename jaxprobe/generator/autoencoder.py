"""The state generator: a VAE-like encoder/decoder over colour stacks (docs/generator.md, 'Architecture').

Colour stacks are `(N, 84, 84, 12)` NHWC in [0, 1], channel `3 * frame + c` with c in RGB
(the order of envpool's `gray_scale=False` stacks once moved to channels-last).

- Encoder: 4 stages of conv 4x4 / stride 2 + batch norm + ReLU, `widths` filters. The
  84x84 input is not resized: padding 1 per side (the DCGAN convention) halves it exactly
  84 -> 42 -> 21 -> 10 -> 5, and dense layers map the 5x5x256 features to the mean and
  log-variance of a `latent_dim` Gaussian.
- Decoder: dense to 8x8x`widths[-1]`, then 4 upsampling stages (x2 each) halving the
  channels, the last to 12 channels and a sigmoid: a 128x128x12 image, centre-cropped
  to 84x84.
- `to_agent_view` turns a colour stack into the agent's `(N, 4, 84, 84)` grayscale in
  [0, 255], differentiably.

`upsample` picks the decoder's formulation, and with it the parameter layout: "transpose"
(`ConvTranspose` 4x4 / stride 2, HWIO kernel `(4, 4, I, O)`) or "subpixel" (conv 3x3 to
4*O channels, then depth-to-space). `conv_impl` ("auto" | "fast" | "hybrid" | "xla", see
`jaxprobe.conv`) only changes how the same parameters are computed with.

The decoder computes only the pixels that survive the crop: the last layer only the 84x84
window, and, with batch norm on running statistics (`train=False`, as in the search),
every layer only the rows and columns the next one reads (about half the decoder's work).
In training, batch statistics need the whole maps of the normalised layers.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxprobe.conv import SubpixelConv, conv_module, conv_transpose_module, resolve_conv_impl
from jaxprobe.envs import COLOUR_STACK_SHAPE, FRAME_SIZE
from jaxprobe.norm import BatchNorm

GRAY_WEIGHTS = (0.299, 0.587, 0.114)
_DECODER_SIZE = 8  # 8 * 2**4 = 128, cropped to 84


def to_agent_view(colour_stack: jnp.ndarray) -> jnp.ndarray:
  """(N, 84, 84, 3*F) in [0, 1] -> the agent's (N, F, 84, 84) grayscale in [0, 255]."""
  n, h, w, c = colour_stack.shape
  gray = colour_stack.reshape(n, h, w, c // 3, 3) @ jnp.asarray(GRAY_WEIGHTS, colour_stack.dtype)
  return 255.0 * jnp.transpose(gray, (0, 3, 1, 2))


class Generator(nn.Module):
  """Encoder to a Gaussian latent, decoder back to a colour stack; see the module docstring."""

  latent_dim: int = 100
  widths: Sequence[int] = (32, 64, 128, 256)
  channels: int = COLOUR_STACK_SHAPE[-1]
  upsample: str = "transpose"
  conv_impl: str = "auto"

  def setup(self):
    """The layers: encoder convolutions and norms, latent heads, decoder."""
    if self.upsample not in ("transpose", "subpixel"):
      raise ValueError(f"upsample must be 'transpose' or 'subpixel', got {self.upsample!r}")
    conv = conv_module(self.conv_impl)
    self.enc_convs = [conv(f, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1))) for f in self.widths]
    self.enc_norms = [_batch_norm() for _ in self.widths]
    self.mean = nn.Dense(self.latent_dim)
    self.logvar = nn.Dense(self.latent_dim)
    self.dec_dense = nn.Dense(_DECODER_SIZE * _DECODER_SIZE * self.widths[-1])
    outs = (*reversed(self.widths[:-1]), self.channels)  # 128, 64, 32, 12
    self.dec_ups = [self._upsampler(f) for f in outs]
    self.dec_norms = [_batch_norm() for _ in outs[:-1]]

  def _upsampler(self, features: int) -> nn.Module:
    if self.upsample == "transpose":
      return conv_transpose_module(self.conv_impl)(features, (4, 4), strides=(2, 2), padding="SAME")
    return SubpixelConv(features, (3, 3), scale=2, impl=resolve_conv_impl(self.conv_impl))

  def encode(self, colour_stack: jnp.ndarray, train: bool = False) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(N, 84, 84, 12) in [0, 1] -> mean, log-variance, each (N, latent_dim)."""
    x = colour_stack
    for conv, norm in zip(self.enc_convs, self.enc_norms):
      x = nn.relu(norm(conv(x), use_running_average=not train))
    x = x.reshape(x.shape[0], -1)
    return self.mean(x), self.logvar(x)

  def decode(self, z: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """(N, latent_dim) -> colour stack (N, 84, 84, 12) in [0, 1]."""
    x = nn.relu(self.dec_dense(z)).reshape(z.shape[0], _DECODER_SIZE, _DECODER_SIZE, self.widths[-1])
    windows, origin = self._decoder_windows(train), (0, 0)
    for i, up in enumerate(self.dec_ups):
      x = up(x, window=windows[i], origin=origin, in_size=(_DECODER_SIZE << i,) * 2)
      origin = (windows[i][0][0], windows[i][1][0])
      if i < len(self.dec_norms):
        x = nn.relu(self.dec_norms[i](x, use_running_average=not train))
    return nn.sigmoid(x)

  def _decoder_windows(self, train: bool):
    """Per upsampling layer, the output window to compute: the crop for the last layer, then
    back to front what each layer reads (whole maps for layers whose batch statistics count)."""
    n = len(self.dec_ups)
    top = ((_DECODER_SIZE << n) - FRAME_SIZE) // 2
    windows = [((top, top + FRAME_SIZE),) * 2]
    for i in reversed(range(n - 1)):
      size = _DECODER_SIZE << (i + 1)
      windows.insert(0, ((0, size),) * 2 if train else self.dec_ups[i + 1].input_window(windows[0], (size, size)))
    return windows

  def __call__(
    self, colour_stack: jnp.ndarray, train: bool = False, sample: bool | None = None
  ) -> dict[str, jnp.ndarray]:
    """Encode, draw z (from the `latent` rng when sampling, which defaults to `train`), decode.

    Returns `mean`, `logvar`, `z`, `colour` (the reconstruction) and `agent_view` (its
    grayscale as the agent sees it).
    """
    mean, logvar = self.encode(colour_stack, train)
    z = mean
    if train if sample is None else sample:
      z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(self.make_rng("latent"), mean.shape, mean.dtype)
    colour = self.decode(z, train)
    return {"mean": mean, "logvar": logvar, "z": z, "colour": colour, "agent_view": to_agent_view(colour)}


def _batch_norm() -> BatchNorm:
  # Momentum 0.9 is PyTorch's BatchNorm default (its momentum=0.1): running statistics
  # then follow the same schedule as in a PyTorch implementation of the paper's generator.
  return BatchNorm(momentum=0.9, epsilon=1e-5)
