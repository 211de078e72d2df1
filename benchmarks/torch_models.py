"""PyTorch ports of jaxprobe's networks, written as the paper's authors' PyTorch code would be.

Plain NCHW modules (`nn.Conv2d`, `nn.ConvTranspose2d`, `nn.BatchNorm2d`, a flatten of C, H, W)
so the peers in the benchmarks run PyTorch's ordinary fast path. The layout differences from
our Flax networks live in the loaders, not in the modules:
- Flax conv kernels are HWIO, PyTorch's OIHW;
- Flax's `ConvTranspose` (no `transpose_kernel`) is a dilated convolution with the kernel
  as stored, PyTorch's `ConvTranspose2d` one with the kernel flipped; PyTorch's weight is
  (in, out, kh, kw);
- Flax flattens H, W, C and reshapes dense outputs to H, W, C, so the dense weights next
  to a flatten or a reshape are permuted to C, H, W order.

`nature_from_flax` and `generator_from_flax` copy our params into these modules so both
sides compute the same function on the same weights (tests/test_torch_port.py checks it).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # jaxprobe.generator.autoencoder.GRAY_WEIGHTS
DECODER_SIZE, FRAME_SIZE, ENCODER_SIZE = 8, 84, 5


class TorchNature(nn.Module):
  """Nature DQN CNN: Q-values of (N, 4, 84, 84) observations in [0, 255].

  One `nn.ReLU` module per use: Captum's GuidedBackprop hooks ReLU modules, and a module
  used twice would get its hook applied twice.
  """

  def __init__(self, num_actions: int):
    super().__init__()
    self.convs = nn.ModuleList([nn.Conv2d(4, 32, 8, 4), nn.Conv2d(32, 64, 4, 2), nn.Conv2d(64, 64, 3, 1)])
    self.relus = nn.ModuleList([nn.ReLU() for _ in range(4)])
    self.fc = nn.Linear(3136, 512)
    self.head = nn.Linear(512, num_actions)

  def forward(self, obs):
    x = obs / 255.0
    for conv, relu in zip(self.convs, self.relus):
      x = relu(conv(x))
    return self.head(self.relus[3](self.fc(x.flatten(1))))


class TorchGenerator(nn.Module):
  """The generator of docs/generator.md with a `ConvTranspose2d` decoder; colour stacks are (N, 12, 84, 84)."""

  def __init__(self, widths=(32, 64, 128, 256), latent=100, channels=12):
    super().__init__()
    chans = (channels, *widths)
    self.widths = tuple(widths)
    self.enc = nn.Sequential(
      *[
        m
        for i in range(len(widths))
        for m in (nn.Conv2d(chans[i], chans[i + 1], 4, 2, 1), nn.BatchNorm2d(chans[i + 1]), nn.ReLU())
      ]
    )
    flat = ENCODER_SIZE * ENCODER_SIZE * widths[-1]
    self.mean, self.logvar = nn.Linear(flat, latent), nn.Linear(flat, latent)
    self.dense = nn.Linear(latent, DECODER_SIZE * DECODER_SIZE * widths[-1])
    outs = (*reversed(widths), channels)
    layers = []
    for i in range(len(widths)):
      layers.append(nn.ConvTranspose2d(outs[i], outs[i + 1], 4, 2, 1))
      if i < len(widths) - 1:
        layers += [nn.BatchNorm2d(outs[i + 1]), nn.ReLU()]
    self.dec = nn.Sequential(*layers)
    self.register_buffer("gray", torch.tensor(GRAY_WEIGHTS), persistent=False)

  def encode(self, x):
    h = self.enc(x).flatten(1)
    return self.mean(h), self.logvar(h)

  def decode(self, z):
    x = F.relu(self.dense(z)).view(-1, self.widths[-1], DECODER_SIZE, DECODER_SIZE)
    top = (DECODER_SIZE * 2 ** len(self.widths) - FRAME_SIZE) // 2
    return torch.sigmoid(self.dec(x))[:, :, top : top + FRAME_SIZE, top : top + FRAME_SIZE]

  def forward(self, x, sample: bool = True):
    """Reconstruction, mean and log-variance; z is sampled from q(z|x) unless `sample` is False."""
    mean, logvar = self.encode(x)
    z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean) if sample else mean
    return self.decode(z), mean, logvar

  def agent_view(self, colour):
    """(N, 3F, 84, 84) colour in [0, 1] -> the agent's (N, F, 84, 84) grayscale in [0, 255]."""
    n, c, h, w = colour.shape
    return 255.0 * torch.einsum("nfchw,c->nfhw", colour.view(n, c // 3, 3, h, w), self.gray)


# ----- loaders: Flax params -> these modules -----


def _t(a) -> torch.Tensor:
  return torch.from_numpy(np.array(a, np.float32))  # a writable copy, C-contiguous


def conv_weight(kernel) -> torch.Tensor:
  """Flax HWIO -> PyTorch OIHW."""
  return _t(np.asarray(kernel).transpose(3, 2, 0, 1))


def conv_transpose_weight(kernel) -> torch.Tensor:
  """Flax `ConvTranspose` HWIO (kernel as applied) -> `ConvTranspose2d` (I, O, kh, kw), flipped."""
  return _t(np.asarray(kernel)[::-1, ::-1].transpose(2, 3, 0, 1))


def dense_after_flatten(kernel, h: int, w: int, c: int) -> torch.Tensor:
  """A dense kernel whose inputs Flax flattened as (H, W, C) -> a Linear weight reading (C, H, W)."""
  k = np.asarray(kernel)
  return _t(k.reshape(h, w, c, -1).transpose(3, 2, 0, 1).reshape(k.shape[1], -1))


def dense_before_reshape(kernel, bias, h: int, w: int, c: int) -> tuple[torch.Tensor, torch.Tensor]:
  """A dense layer whose outputs Flax reshapes to (H, W, C) -> a Linear whose outputs view as (C, H, W)."""
  k = np.asarray(kernel)
  weight = k.reshape(-1, h, w, c).transpose(3, 1, 2, 0).reshape(c * h * w, k.shape[0])
  return _t(weight), _t(np.asarray(bias).reshape(h, w, c).transpose(2, 0, 1).reshape(-1))


def _copy(param: torch.Tensor, value: torch.Tensor) -> None:
  if param.shape != value.shape:
    raise ValueError(f"shape mismatch: {tuple(param.shape)} vs {tuple(value.shape)}")
  with torch.no_grad():
    param.copy_(value)


def nature_from_flax(params, num_actions: int) -> TorchNature:
  """A TorchNature with the weights of a `QNetwork` params tree (`{"params": {...}}` or its inside)."""
  p = params.get("params", params)
  net = TorchNature(num_actions)
  for i, conv in enumerate(net.convs):
    _copy(conv.weight, conv_weight(p[f"Conv_{i}"]["kernel"]))
    _copy(conv.bias, _t(p[f"Conv_{i}"]["bias"]))
  _copy(net.fc.weight, dense_after_flatten(p["Dense_0"]["kernel"], 7, 7, 64))
  _copy(net.fc.bias, _t(p["Dense_0"]["bias"]))
  _copy(net.head.weight, _t(np.asarray(p["Dense_1"]["kernel"]).T))
  _copy(net.head.bias, _t(p["Dense_1"]["bias"]))
  return net


def _copy_norm(norm: nn.BatchNorm2d, params, stats) -> None:
  _copy(norm.weight, _t(params["scale"]))
  _copy(norm.bias, _t(params["bias"]))
  _copy(norm.running_mean, _t(stats["mean"]))
  _copy(norm.running_var, _t(stats["var"]))


def generator_from_flax(variables, widths=(32, 64, 128, 256), latent=100, channels=12) -> TorchGenerator:
  """A TorchGenerator with the weights and batch statistics of a `Generator(upsample="transpose")`."""
  p, s = variables["params"], variables["batch_stats"]
  if p["dec_ups_0"]["kernel"].shape[0] != 4:
    raise ValueError("only the 'transpose' decoder layout maps onto ConvTranspose2d")
  gen = TorchGenerator(widths, latent, channels)
  convs, norms = gen.enc[0::3], gen.enc[1::3]
  for i, (conv, norm) in enumerate(zip(convs, norms)):
    _copy(conv.weight, conv_weight(p[f"enc_convs_{i}"]["kernel"]))
    _copy(conv.bias, _t(p[f"enc_convs_{i}"]["bias"]))
    _copy_norm(norm, p[f"enc_norms_{i}"], s[f"enc_norms_{i}"])
  for name in ("mean", "logvar"):
    layer = getattr(gen, name)
    _copy(layer.weight, dense_after_flatten(p[name]["kernel"], ENCODER_SIZE, ENCODER_SIZE, widths[-1]))
    _copy(layer.bias, _t(p[name]["bias"]))
  weight, bias = dense_before_reshape(
    p["dec_dense"]["kernel"], p["dec_dense"]["bias"], DECODER_SIZE, DECODER_SIZE, widths[-1]
  )
  _copy(gen.dense.weight, weight)
  _copy(gen.dense.bias, bias)
  ups = [m for m in gen.dec if isinstance(m, nn.ConvTranspose2d)]
  dec_norms = [m for m in gen.dec if isinstance(m, nn.BatchNorm2d)]
  for i, up in enumerate(ups):
    _copy(up.weight, conv_transpose_weight(p[f"dec_ups_{i}"]["kernel"]))
    _copy(up.bias, _t(p[f"dec_ups_{i}"]["bias"]))
  for i, norm in enumerate(dec_norms):
    _copy_norm(norm, p[f"dec_norms_{i}"], s[f"dec_norms_{i}"])
  return gen


def nhwc_to_nchw(x) -> torch.Tensor:
  return _t(np.asarray(x).transpose(0, 3, 1, 2))
