"""Convolutions whose gradients are fast on XLA:CPU, as drop-ins for Flax's layers.

On XLA:CPU (jax 0.10) convolution weight gradients, strided and transposed convolutions
are slow, and unpadded convolutions go to YNNPACK, which runs them 2-4x slower than XLA's
own kernel on this machine (benchmarks/README.md). Here every convolution becomes a
stride-1 VALID convolution (padding applied first, strides folded into channels by
space-to-depth, a transposed convolution as a sub-pixel convolution followed by
depth-to-space) with a `custom_vjp`: forward and input gradient are forward convolutions
in NHWC kept off YNNPACK, and the weight gradient is one matrix product per kernel tap,
over the batch in cache-sized chunks.

Parameters are those of `nn.Conv` / `nn.ConvTranspose` exactly (HWIO kernels, `bias`):
the implementation is chosen per backend (`resolve_conv_impl`) and never changes what
is saved.
"""
from __future__ import annotations

import functools
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

_NHWC = lax.ConvDimensionNumbers(lhs_spec=(0, 3, 1, 2), rhs_spec=(3, 2, 0, 1), out_spec=(0, 3, 1, 2))

# Bytes of one operand that a chunk of the batch may take in the weight gradient: its
# per-tap matrix products slow down once their operands leave the cache (benchmarks/README.md).
_CHUNK_BYTES = 1 << 20


def resolve_conv_impl(impl: str = "auto") -> str:
  """"auto" -> "xla" on every backend, for now.

  Under `jit` the fast path's gradients lose precision on XLA:CPU (weight gradient of the
  Nature CNN's first layer off by 1e-3, input gradient by 1e-2 of its largest value, against
  2e-6 for XLA's own; eager calls are exact: benchmarks/README.md). With the YNNPACK flag
  that `import jaxprobe` sets, XLA's own convolutions are within 10% of the fast path's
  speed, so they are the default until that is fixed; "fast" stays available.
  """
  if impl not in ("auto", "fast", "xla"):
    raise ValueError(f"conv impl must be 'auto', 'fast' or 'xla', got {impl!r}")
  return "xla" if impl == "auto" else impl


def conv_module(impl: str = "auto") -> Callable[..., nn.Module]:
  """A factory with `nn.Conv`'s signature and parameters, for a network's `conv` field."""
  if resolve_conv_impl(impl) == "xla":
    return nn.Conv
  return functools.partial(nn.Conv, conv_general_dilated=fast_conv_general_dilated)


def conv_transpose_module(impl: str = "auto") -> Callable[..., nn.Module]:
  """A factory with `nn.ConvTranspose`'s signature and parameters (no `transpose_kernel`)."""
  return nn.ConvTranspose if resolve_conv_impl(impl) == "xla" else ConvTranspose


def space_to_depth(x: jnp.ndarray, sy: int, sx: int) -> jnp.ndarray:
  """(B, H, W, C) -> (B, H/sy, W/sx, sy*sx*C), channels ordered (row, column, C)."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // sy, sy, w // sx, sx, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h // sy, w // sx, sy * sx * c)


def depth_to_space(x: jnp.ndarray, sy: int, sx: int) -> jnp.ndarray:
  """Inverse of `space_to_depth`: (B, H, W, sy*sx*C) -> (B, H*sy, W*sx, C)."""
  b, h, w, c = x.shape
  x = x.reshape(b, h, w, sy, sx, c // (sy * sx)).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h * sy, w * sx, c // (sy * sx))


def fast_conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                              rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                              batch_group_count=1, precision=None, preferred_element_type=None):
  """`lax.conv_general_dilated` with fast gradients for 2-D NHWC/HWIO convolutions.

  Cases outside what our networks use (dilation, groups, other layouts) go to lax as-is.
  """
  dilated = any(d != 1 for d in tuple(lhs_dilation or ()) + tuple(rhs_dilation or ()))
  if (lhs.ndim != 4 or dilated or feature_group_count != 1 or batch_group_count != 1
      or preferred_element_type is not None
      or lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) != _NHWC):
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                    dimension_numbers, feature_group_count, batch_group_count,
                                    precision, preferred_element_type)
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
  x = lax.pad(lhs, jnp.zeros((), lhs.dtype), [(0, 0, 0), (*padding[0], 0), (*padding[1], 0), (0, 0, 0)])
  x, w = _fold_strides(x, rhs, tuple(window_strides))
  return conv_valid(x, w, precision)


def _fold_strides(x: jnp.ndarray, w: jnp.ndarray, strides: tuple[int, int]):
  """A k x k stride-s convolution as a ceil(k/s) x ceil(k/s) stride-1 one on space-to-depth input."""
  if strides == (1, 1):
    return x, w
  (sy, sx), (ky, kx) = strides, w.shape[:2]
  fy, fx = -(-ky // sy), -(-kx // sx)
  oy, ox = (x.shape[1] - ky) // sy + 1, (x.shape[2] - kx) // sx + 1
  # Rows past the last window are never read, and rows the window needs past the input
  # meet zero kernel taps: so cropping or zero-padding to a multiple of the stride is exact.
  x = lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0), (0, sy * (oy + fy - 1) - x.shape[1], 0),
                                          (0, sx * (ox + fx - 1) - x.shape[2], 0), (0, 0, 0)])
  w = jnp.pad(w, ((0, sy * fy - ky), (0, sx * fx - kx), (0, 0), (0, 0)))
  w = w.reshape(fy, sy, fx, sx, *w.shape[2:]).transpose(0, 2, 1, 3, 4, 5)
  return space_to_depth(x, sy, sx), w.reshape(fy, fx, sy * sx * w.shape[4], w.shape[5])


def conv_transpose(x: jnp.ndarray, kernel: jnp.ndarray, strides: Sequence[int],
                   padding: str | Sequence[tuple[int, int]], precision=None) -> jnp.ndarray:
  """`lax.conv_transpose` (NHWC, HWIO, `transpose_kernel=False`) as sub-pixel convolution.

  Output row `s*m + r` reads input rows `m + d` through kernel tap `s*d + pad_lo - r`;
  gathering those taps gives a stride-1 kernel with `s*s*O` outputs, and depth-to-space
  interleaves its phases. Gradients flow through the gather back to the HWIO kernel.
  """
  (sy, sx), (ky, kx) = tuple(strides), kernel.shape[:2]
  if isinstance(padding, str):
    padding = [_conv_transpose_pads(k, s, padding) for k, s in ((ky, sy), (kx, sx))]
  taps_y, lo_y, hi_y, m_y = _subpixel_taps(x.shape[1], ky, sy, *padding[0])
  taps_x, lo_x, hi_x, m_x = _subpixel_taps(x.shape[2], kx, sx, *padding[1])
  kernel = jnp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0)))  # tap index k reads zeros
  w = kernel[taps_y][:, :, taps_x]  # (dy, sy, dx, sx, I, O)
  w = w.transpose(0, 2, 4, 1, 3, 5).reshape(taps_y.shape[0], taps_x.shape[0], kernel.shape[2], -1)
  x = lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0), (lo_y, hi_y, 0), (lo_x, hi_x, 0), (0, 0, 0)])
  y = depth_to_space(conv_valid(x, w, precision), sy, sx)
  return y[:, :m_y, :m_x]


def _conv_transpose_pads(k: int, s: int, padding: str) -> tuple[int, int]:
  """The (low, high) padding of the dilated input that `lax.conv_transpose` uses."""
  if padding == "SAME":
    total, lo = k + s - 2, (k - 1 if s > k - 1 else -(-(k + s - 2) // 2))
  elif padding == "VALID":
    total, lo = k + s - 2 + max(k - s, 0), k - 1
  else:
    raise ValueError(f"padding must be 'SAME', 'VALID' or pairs, got {padding!r}")
  return lo, total - lo


def _subpixel_taps(n: int, k: int, s: int, pad_lo: int, pad_hi: int):
  """For one axis: kernel tap per (offset d, phase r), input padding (lo, hi), output length.

  Phase r's m-th output reads inputs m + d_min .. m + d_max; padding by (-d_min, ...) lets a
  VALID stride-1 convolution produce ceil(out / s) positions per phase.
  """
  out = (n - 1) * s + 1 + pad_lo + pad_hi - k + 1
  d_min, d_max = -(pad_lo // s), (k - 1 + s - 1 - pad_lo) // s
  d = np.arange(d_min, d_max + 1)[:, None]
  taps = s * d + pad_lo - np.arange(s)[None, :]
  taps = np.where((taps >= 0) & (taps < k), taps, k)
  m = -(-out // s)  # output positions per phase
  return taps, -d_min, m + d_max - n, out


class ConvTranspose(nn.Module):
  """`nn.ConvTranspose` (2-D, `transpose_kernel=False`) computed by `conv_transpose`.

  Same parameters (`kernel` HWIO, `bias`), so checkpoints move between implementations.
  """
  features: int
  kernel_size: int | Sequence[int]
  strides: int | Sequence[int] = (1, 1)
  padding: str | Sequence[tuple[int, int]] = "SAME"
  use_bias: bool = True
  precision: lax.PrecisionLike = None
  kernel_init: Callable = nn.initializers.lecun_normal()
  bias_init: Callable = nn.initializers.zeros

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)
    kernel = self.param("kernel", self.kernel_init, (*pair(self.kernel_size), x.shape[-1], self.features))
    y = conv_transpose(x, kernel, pair(self.strides), self.padding, self.precision)
    if self.use_bias:
      y = y + self.param("bias", self.bias_init, (self.features,))
    return y


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv_valid(x: jnp.ndarray, w: jnp.ndarray, precision=None) -> jnp.ndarray:
  """Stride-1 VALID NHWC/HWIO convolution with the fast gradients described above."""
  return _xla_conv(x, w, precision)


def _conv_valid_fwd(x, w, precision):
  return conv_valid(x, w, precision), (x, w)


def _conv_valid_bwd(precision, res, g):
  x, w = res
  ky, kx = w.shape[:2]
  # The input gradient is the full correlation of g with the flipped, transposed kernel.
  w_flip = jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2)
  pads = ((0, 0), (ky - 1, ky - 1), (kx - 1, kx - 1), (0, 0))
  dx = _xla_conv(jnp.pad(g, pads), w_flip, precision)
  # One weight gradient per chunk (leading axis 1 so chunks concatenate), then their sum;
  # chunks hold at least twice the kernel's bytes so the per-chunk sums stay cheap.
  budget = max(_CHUNK_BYTES, 2 * w.size * w.dtype.itemsize)
  dw = _map_batch(lambda xc, gc: _weight_grad(xc, gc, ky, kx, precision)[None], x, g, budget=budget).sum(0)
  return dx, dw.astype(w.dtype)


conv_valid.defvjp(_conv_valid_fwd, _conv_valid_bwd)


def _xla_conv(x, w, precision):
  # One row of padding, whose output row is dropped, keeps XLA:CPU off its YNNPACK
  # convolution, which it uses for unpadded ones only and which runs 2-4x slower here.
  y = lax.conv_general_dilated(x, w, (1, 1), ((0, 1), (0, 0)), dimension_numbers=_NHWC, precision=precision)
  return y[:, :-1]


def _weight_grad(x, g, ky, kx, precision):
  """dW[i, j] = x[:, i:i+H, j:j+W].reshape(-1, I).T @ g.reshape(-1, O): one matmul per tap."""
  h, w, o = g.shape[1:]
  g = g.reshape(-1, o)
  taps = [lax.dot_general(x[:, i:i + h, j:j + w].reshape(-1, x.shape[3]), g, (((0,), (0,)), ((), ())),
                          precision=precision)
          for i in range(ky) for j in range(kx)]
  return jnp.stack(taps).reshape(ky, kx, x.shape[3], o)


def _map_batch(f: Callable, *arrays: jnp.ndarray, budget: int) -> jnp.ndarray:
  """f over the batch in chunks of at most `budget` bytes per operand (a `lax.map` plus a
  remainder), results concatenated along axis 0."""
  b = arrays[0].shape[0]
  n = int(np.clip(budget // max(a[0].size * a.dtype.itemsize for a in arrays), 1, b))
  if n == b:
    return f(*arrays)
  full = b - b % n
  y = lax.map(lambda xs: f(*xs), tuple(a[:full].reshape(full // n, n, *a.shape[1:]) for a in arrays))
  y = y.reshape(-1, *y.shape[2:])
  return y if full == b else jnp.concatenate([y, f(*(a[full:] for a in arrays))])
