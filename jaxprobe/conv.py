"""Convolutions whose gradients are fast on XLA:CPU, as drop-ins for Flax's layers.

On XLA:CPU (jax 0.10) convolution weight gradients, strided and transposed convolutions
are slow, and unpadded convolutions go to YNNPACK, which runs them 2-4x slower than XLA's
own kernel on this machine (benchmarks/README.md). Here every convolution becomes a
stride-1 VALID convolution (padding applied first, strides folded into channels by
space-to-depth) with a `custom_vjp`: forward and input gradient are forward convolutions
in NHWC kept off YNNPACK, and the weight gradient is one matrix product per kernel tap,
over the batch in cache-sized chunks. A transposed convolution is one convolution per
output phase, interleaved by depth-to-space, optionally over an output window only; its
fast gradients are two matrix products against the output gradient's taps.

The CPU default for ordinary convolutions is "hybrid": XLA's own convolution and weight
gradient (as fast as the above here with the YNNPACK flag), with only the strided input
gradient, which XLA computes over an output gradient padded with inserted zeros, done here.

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
from jax.custom_derivatives import SymbolicZero

_NHWC = lax.ConvDimensionNumbers(lhs_spec=(0, 3, 1, 2), rhs_spec=(3, 2, 0, 1), out_spec=(0, 3, 1, 2))

# Bytes of one operand that a chunk of the batch may take in the weight gradient: its
# per-tap matrix products slow down once their operands leave the cache (benchmarks/README.md).
_CHUNK_BYTES = 1 << 20


IMPLS = ("auto", "fast", "hybrid", "xla")


def resolve_conv_impl(impl: str = "auto", transposed: bool = False) -> str:
  """ "auto" -> on CPU "fast" for transposed convolutions and "hybrid" for the others; "xla" elsewhere.

  - "xla": XLA's own convolutions and gradients.
  - "hybrid": XLA's convolution and weight gradient (fastest here with the YNNPACK flag that
    `import jaxprobe` sets), but a strided convolution's input gradient computed without the
    zeros XLA inserts into the output gradient (`hybrid_conv_general_dilated`): guided
    backprop 1.5x and the latent search about 1.1x faster on CPU (benchmarks/README.md).
    For transposed convolutions it means "fast".
  - "fast": every gradient from jaxprobe's own formulations (`fast_conv_general_dilated`,
    `conv_transpose`). For a transposed convolution the gradients are two matrix products
    (generator training step about 10% faster on CPU).
  Accelerators: XLA's own.
  """
  if impl not in IMPLS:
    raise ValueError(f"conv impl must be one of {IMPLS}, got {impl!r}")
  if impl == "auto":
    impl = "xla" if jax.default_backend() != "cpu" else "hybrid"
  return "fast" if transposed and impl == "hybrid" else impl


def conv_module(impl: str = "auto") -> Callable[..., nn.Module]:
  """A factory with `nn.Conv`'s signature and parameters, for a network's `conv` field.

  One object per implementation, so that specs holding it compare (and hash under `jit`) equal.
  """
  return _CONV_MODULES[resolve_conv_impl(impl)]


def conv_transpose_module(impl: str = "auto") -> Callable[..., nn.Module]:
  """A factory with `nn.ConvTranspose`'s signature and parameters (no `transpose_kernel`)."""
  return functools.partial(ConvTranspose, impl=resolve_conv_impl(impl, transposed=True))


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


def _conv2d_entry(conv2d: Callable, doc: str) -> Callable:
  """A drop-in for `lax.conv_general_dilated` that sends 2-D NHWC/HWIO convolutions without
  dilation or groups to `conv2d(x, w, strides, explicit pads, precision)`; cases outside what
  our networks use go to lax as-is."""

  def conv_general_dilated(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count=1,
    batch_group_count=1,
    precision=None,
    preferred_element_type=None,
  ):
    dilated = any(d != 1 for d in tuple(lhs_dilation or ()) + tuple(rhs_dilation or ()))
    if (
      lhs.ndim != 4
      or dilated
      or feature_group_count != 1
      or batch_group_count != 1
      or preferred_element_type is not None
      or lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) != _NHWC
    ):
      return lax.conv_general_dilated(
        lhs,
        rhs,
        window_strides,
        padding,
        lhs_dilation,
        rhs_dilation,
        dimension_numbers,
        feature_group_count,
        batch_group_count,
        precision,
        preferred_element_type,
      )
    if isinstance(padding, str):
      padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
    pads = tuple(tuple(int(v) for v in p) for p in padding)
    return conv2d(lhs, rhs, tuple(int(s) for s in window_strides), pads, precision)

  conv_general_dilated.__doc__ = doc
  return conv_general_dilated


def _fast_conv2d(x, w, strides, pads, precision):
  x = lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0), (*pads[0], 0), (*pads[1], 0), (0, 0, 0)])
  return conv_valid(*_fold_strides(x, w, strides), precision)


def _lax_conv2d(x, w, strides, pads, precision):
  return lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=_NHWC, precision=precision)


def _hybrid_conv2d(x, w, strides, pads, precision):
  return (_lax_conv2d if strides == (1, 1) else _strided_conv)(x, w, strides, pads, precision)


fast_conv_general_dilated = _conv2d_entry(
  _fast_conv2d, "`lax.conv_general_dilated` with jaxprobe's own gradients for 2-D NHWC/HWIO convolutions."
)
hybrid_conv_general_dilated = _conv2d_entry(
  _hybrid_conv2d,
  "`lax.conv_general_dilated` whose strided 2-D NHWC/HWIO convolutions take their input "
  "gradient from `_strided_conv` (XLA's forward and weight gradient).",
)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _strided_conv(x, w, strides, pads, precision):
  """XLA's strided convolution, whose input gradient (a transposed convolution of the output
  gradient) XLA computes over the output gradient with s-1 zeros inserted between rows and
  columns: 3-4x the forward pass's time for our first layers here. This one does only the real
  products: per output phase (`conv_transpose`) from 32 input channels, and through
  space-to-depth (`_fast_conv2d`, one convolution to s*s*C channels) below, where per-phase
  convolutions with so few outputs run at half speed."""
  return _lax_conv2d(x, w, strides, pads, precision)


def _strided_conv_fwd(x, w, strides, pads, precision):
  return _strided_conv(x, w, strides, pads, precision), (x, w)


def _strided_conv_bwd(strides, pads, precision, res, g):
  x, w = res
  dw = jax.vjp(lambda w: _lax_conv2d(x, w, strides, pads, precision), w)[1](g)[0]
  if x.shape[3] >= 32:
    # lax's transposed-convolution padding for the input gradient of a strided convolution.
    tpads = [
      (k - 1 - lo, n - (o - 1) * s - 1 + lo)
      for n, k, s, o, (lo, _) in zip(x.shape[1:3], w.shape[:2], strides, g.shape[1:3], pads)
    ]
    dx = conv_transpose(g, jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2), strides, tpads, precision, impl="xla")
  else:
    dx = jax.vjp(lambda x: _fast_conv2d(x, w, strides, pads, precision), x)[1](g)[0]
  return dx.astype(x.dtype), dw


_strided_conv.defvjp(_strided_conv_fwd, _strided_conv_bwd)


def _fold_strides(x: jnp.ndarray, w: jnp.ndarray, strides: tuple[int, int]):
  """A k x k stride-s convolution as a ceil(k/s) x ceil(k/s) stride-1 one on space-to-depth input."""
  if strides == (1, 1):
    return x, w
  (sy, sx), (ky, kx) = strides, w.shape[:2]
  fy, fx = -(-ky // sy), -(-kx // sx)
  oy, ox = (x.shape[1] - ky) // sy + 1, (x.shape[2] - kx) // sx + 1
  # Rows past the last window are never read, and rows the window needs past the input
  # meet zero kernel taps: so cropping or zero-padding to a multiple of the stride is exact.
  x = lax.pad(
    x,
    jnp.zeros((), x.dtype),
    [(0, 0, 0), (0, sy * (oy + fy - 1) - x.shape[1], 0), (0, sx * (ox + fx - 1) - x.shape[2], 0), (0, 0, 0)],
  )
  w = jnp.pad(w, ((0, sy * fy - ky), (0, sx * fx - kx), (0, 0), (0, 0)))
  w = w.reshape(fy, sy, fx, sx, *w.shape[2:]).transpose(0, 2, 1, 3, 4, 5)
  return space_to_depth(x, sy, sx), w.reshape(fy, fx, sy * sx * w.shape[4], w.shape[5])


Window = tuple[tuple[int, int], tuple[int, int]]  # ((top, bottom), (left, right)), ends exclusive


def conv_transpose(
  x: jnp.ndarray,
  kernel: jnp.ndarray,
  strides: Sequence[int],
  padding: str | Sequence[tuple[int, int]],
  precision=None,
  *,
  window: Window | None = None,
  origin: tuple[int, int] = (0, 0),
  in_size: tuple[int, int] | None = None,
  impl: str = "fast",
) -> jnp.ndarray:
  """`lax.conv_transpose` (NHWC, HWIO, `transpose_kernel=False`), one convolution per output phase.

  Output row `s*m + r` reads input rows `m + d` through kernel tap `s*d + pad_lo - r`: each
  phase r is a stride-1 convolution with just the taps that exist for it (2 of a 4x4 / stride-2
  kernel's 4 per axis), so the work is the transposed convolution's, with no product against
  an inserted zero, and `depth_to_space` interleaves the phases.

  `window` computes only that part of the output (the rest is never computed); `x` may then
  hold only rows `origin[0]..` and columns `origin[1]..` of an input of `in_size`, as long as
  it covers the rows `ConvTranspose.input_window` names (zeros outside the full input are implied).

  `impl`: "xla" differentiates the per-phase convolutions with XLA's own rules; "fast" keeps
  their forward pass but computes the gradients as matrix products (`_conv_transpose_mm`).
  """
  (sy, sx), (ky, kx) = tuple(strides), kernel.shape[:2]
  in_size = tuple(in_size or x.shape[1:3])
  if isinstance(padding, str):
    padding = [_conv_transpose_pads(k, s, padding) for k, s in ((ky, sy), (kx, sx))]
  rows, cols = _transpose_phases(ky, sy, padding[0]), _transpose_phases(kx, sx, padding[1])
  if window is None:
    window = tuple(
      (0, (n - 1) * s + 1 + lo + hi - k + 1) for n, s, k, (lo, hi) in zip(in_size, (sy, sx), (ky, kx), padding)
    )
  if impl == "fast":
    # Only the input rows the window reads go in: the matmul gradient works on all it is given.
    (top, bottom), (left, right) = _input_window(window, rows, cols, in_size)
    x = _extend(_extend(x, 1, origin[0], in_size[0], top, bottom), 2, origin[1], in_size[1], left, right)
    pads = tuple(tuple(int(v) for v in p) for p in padding)
    return _conv_transpose_mm(
      x, kernel, (sy, sx), pads, tuple(tuple(w) for w in window), (top, left), in_size, precision
    )
  return _conv_transpose_phases(x, kernel, rows, cols, window, origin, in_size, precision)


def _conv_transpose_phases(x, kernel, rows, cols, window, origin, in_size, precision):
  kernels = [[kernel[np.array(ty)][:, np.array(tx)] for _, tx in cols] for _, ty in rows]
  return _phase_conv(x, kernels, rows, cols, window, origin, in_size, "xla", precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5, 6, 7))
def _conv_transpose_mm(x, kernel, strides, pads, window, origin, in_size, precision):
  """XLA's per-phase convolutions, with gradients from one matrix of output-gradient taps.

  Input row i meets output row s*i + pad_lo - t through kernel tap t. With P[i, t] the output
  gradient at that row (zero outside the window), dW = X^T P and dX = P W^T, single matrix
  products over every (row, column) position of `x`, which holds exactly the input rows
  `origin[0]..` and columns `origin[1]..` that the window reads: no layout copy of `x` per
  phase, which XLA's own weight gradients make here. When the kernel needs no gradient (the
  latent search), P is not built and dX comes from XLA's input-gradient convolutions, faster
  alone than P W^T (benchmarks/README.md).
  """
  rows, cols = (_transpose_phases(k, s, p) for k, s, p in zip(kernel.shape[:2], strides, pads))
  return _conv_transpose_phases(x, kernel, rows, cols, window, origin, in_size, precision)


def _conv_transpose_mm_fwd(x, kernel, strides, pads, window, origin, in_size, precision):
  # symbolic_zeros: the primals come wrapped, with whether each needs a gradient.
  x, (kernel, kernel_needs_grad) = x.value, (kernel.value, kernel.perturbed)
  rows, cols = (_transpose_phases(k, s, p) for k, s, p in zip(kernel.shape[:2], strides, pads))
  phases = lambda x: _conv_transpose_phases(x, kernel, rows, cols, window, origin, in_size, precision)
  if kernel_needs_grad:
    return phases(x), (x, kernel, None)
  y, input_vjp = jax.vjp(phases, x)
  return y, (x, kernel, input_vjp)


def _conv_transpose_mm_bwd(strides, pads, window, origin, in_size, precision, res, g):
  x, kernel, input_vjp = res
  if isinstance(g, SymbolicZero):
    return None, None
  if input_vjp is not None:
    return input_vjp(g)[0], None
  (ky, kx, ci, co), (sy, sx) = kernel.shape, strides
  n, hx, wx = x.shape[:3]
  (ply, _), (plx, _) = pads
  # Output rows that rows origin..origin+hx reach, and g padded (or cut) to exactly those, then
  # to whole blocks of s rows (kernels whose k is not a multiple of s get zero taps to fill them).
  by, bx = -(-ky // sy), -(-kx // sx)
  first = (sy * origin[0] + ply - (ky - 1), sx * origin[1] + plx - (kx - 1))
  last = (sy * (origin[0] + hx - 1) + ply + by * sy - ky, sx * (origin[1] + wx - 1) + plx + bx * sx - kx)
  g = lax.pad(
    g,
    jnp.zeros((), g.dtype),
    [
      (0, 0, 0),
      (window[0][0] - first[0], last[0] + 1 - window[0][1], 0),
      (window[1][0] - first[1], last[1] + 1 - window[1][1], 0),
      (0, 0, 0),
    ],
  )
  # P[i, t] = g[s*i + k-1-t]: in blocks of s rows (space-to-depth) the by blocks from block i hold
  # every tap, so P is by x bx contiguous slices, taps k-1-t ordered block-major.
  g = space_to_depth(g, sy, sx)
  p = jnp.stack([g[:, ey : ey + hx, ex : ex + wx] for ey in range(by) for ex in range(bx)], 3).reshape(n * hx * wx, -1)
  w = jnp.pad(kernel[::-1, ::-1], ((0, by * sy - ky), (0, bx * sx - kx), (0, 0), (0, 0)))
  w = w.reshape(by, sy, bx, sx, ci, co).transpose(4, 0, 2, 1, 3, 5).reshape(ci, -1)
  dw = jnp.matmul(x.reshape(-1, ci).T, p, precision=precision).reshape(ci, by, bx, sy, sx, co)
  dw = dw.transpose(1, 3, 2, 4, 0, 5).reshape(by * sy, bx * sx, ci, co)[ky - 1 :: -1, kx - 1 :: -1]
  dx = jnp.matmul(p, w.T, precision=precision).reshape(x.shape)
  return dx.astype(x.dtype), dw.astype(kernel.dtype)


_conv_transpose_mm.defvjp(_conv_transpose_mm_fwd, _conv_transpose_mm_bwd, symbolic_zeros=True)


def subpixel_conv(
  x: jnp.ndarray,
  kernel: jnp.ndarray,
  scale: int,
  precision=None,
  *,
  bias: jnp.ndarray | None = None,
  window: Window | None = None,
  origin: tuple[int, int] = (0, 0),
  in_size: tuple[int, int] | None = None,
  impl: str = "fast",
) -> jnp.ndarray:
  """A SAME stride-1 convolution to `scale**2 * O` channels (plus `bias`) followed by
  `depth_to_space`, with `window`, `origin` and `in_size` as in `conv_transpose`."""
  (ky, kx), in_size = kernel.shape[:2], tuple(in_size or x.shape[1:3])
  window = window or tuple((0, scale * n) for n in in_size)
  o = kernel.shape[3] // scale**2
  kernels = [[kernel[..., (r * scale + q) * o : (r * scale + q + 1) * o] for q in range(scale)] for r in range(scale)]
  rows, cols = _subpixel_phases(ky, scale), _subpixel_phases(kx, scale)
  return _phase_conv(x, kernels, rows, cols, window, origin, in_size, impl, precision, bias)


def _input_window(window: Window, rows, cols, in_size: tuple[int, int]) -> Window:
  """The input rows and columns (within the input) that an output `window` of a phase
  convolution with these `rows` and `cols` phases reads."""
  return tuple(
    (max(lo, 0), min(hi, n))
    for (lo, hi), n in zip((_axis_plan(window[0], rows)[2:], _axis_plan(window[1], cols)[2:]), in_size)
  )


def _transpose_phases(k: int, s: int, padding: str | tuple[int, int]) -> list[tuple[int, tuple[int, ...]]]:
  """Per output phase r of a transposed-convolution axis: the first input offset d and the
  kernel taps s*d + pad_lo - r that phase reads, d ascending."""
  pad_lo, phases = _conv_transpose_pads(k, s, padding)[0], []
  for r in range(s):
    d0 = -((pad_lo - r) // s)  # smallest d with s*d + pad_lo - r >= 0
    taps = tuple(range(s * d0 + pad_lo - r, k, s))
    if not taps:
      raise ValueError(f"a kernel of {k} taps with stride {s} leaves output phase {r} empty")
    phases.append((d0, taps))
  return phases


def _subpixel_phases(k: int, scale: int) -> list[tuple[int, tuple[int, ...]]]:
  """A SAME k-tap convolution before depth-to-space: every phase reads all taps from -(k-1)//2."""
  return [(-((k - 1) // 2), tuple(range(k)))] * scale


def _axis_plan(window: tuple[int, int], phases: Sequence[tuple[int, int]]) -> tuple[int, int, int, int]:
  """Positions per phase [m0, m1) covering the window, and the input rows [lo, hi) they read."""
  s, (start, stop) = len(phases), window
  m0, m1 = start // s, -(-stop // s)
  return m0, m1, m0 + min(d for d, _ in phases), m1 - 1 + max(d + len(taps) for d, taps in phases)


def _extend(x: jnp.ndarray, axis: int, origin: int, size: int, lo: int, hi: int) -> jnp.ndarray:
  """Rows [lo, hi) of the zero-extended input, from `x` holding rows [origin, origin + len)."""
  length = x.shape[axis]
  if max(lo, 0) < origin or min(hi, size) > origin + length:
    raise ValueError(
      f"input rows {lo}..{hi} are needed along axis {axis}, but x holds rows {origin}..{origin + length} of {size}"
    )
  start, stop = lo - origin, hi - origin
  x = lax.slice_in_dim(x, max(start, 0), min(stop, length), axis=axis)
  pads = [(0, 0, 0)] * x.ndim
  pads[axis] = (max(-start, 0), max(stop - length, 0), 0)
  return lax.pad(x, jnp.zeros((), x.dtype), pads)


def _phase_conv(x, kernels, rows, cols, window, origin, in_size, impl, precision, bias=None):
  """Output pixel (s*m + r, t*n + q) is phase (r, q)'s VALID convolution of `kernels[r][q]` with
  the input from row m + rows[r][0], column n + cols[q][0] (plus `bias`, phase-major like
  `depth_to_space`'s channels): computed over `window` only."""
  sy, sx = len(rows), len(cols)
  m0y, m1y, loy, hiy = _axis_plan(window[0], rows)
  m0x, m1x, lox, hix = _axis_plan(window[1], cols)
  x = _extend(_extend(x, 1, origin[0], in_size[0], loy, hiy), 2, origin[1], in_size[1], lox, hix)
  conv = (
    (lambda x, w: conv_valid(x, w, precision))
    if impl == "fast"
    else (lambda x, w: _lax_conv2d(x, w, (1, 1), "VALID", precision))
  )

  def view(r, q):
    (dy, ty), (dx, tx) = rows[r], cols[q]
    return x[:, m0y + dy - loy : m1y + dy + len(ty) - 1 - loy, m0x + dx - lox : m1x + dx + len(tx) - 1 - lox]

  if len(set(rows)) == 1 and len(set(cols)) == 1:  # one convolution for all phases
    y = conv(view(0, 0), jnp.concatenate([k for row in kernels for k in row], axis=-1))
  else:
    y = jnp.stack([jnp.stack([conv(view(r, q), kernels[r][q]) for q in range(sx)], 3) for r in range(sy)], 3)
    y = y.reshape(*y.shape[:3], -1)
  if bias is not None:
    y = y + bias
  y = depth_to_space(y, sy, sx)
  return y[:, window[0][0] - sy * m0y : window[0][1] - sy * m0y, window[1][0] - sx * m0x : window[1][1] - sx * m0x]


def _conv_transpose_pads(k: int, s: int, padding) -> tuple[int, int]:
  """The (low, high) padding of the dilated input that `lax.conv_transpose` uses."""
  if not isinstance(padding, str):
    return tuple(padding)
  if padding == "SAME":
    total, lo = k + s - 2, (k - 1 if s > k - 1 else -(-(k + s - 2) // 2))
  elif padding == "VALID":
    total, lo = k + s - 2 + max(k - s, 0), k - 1
  else:
    raise ValueError(f"padding must be 'SAME', 'VALID' or pairs, got {padding!r}")
  return lo, total - lo


class ConvTranspose(nn.Module):
  """`nn.ConvTranspose` (2-D, `transpose_kernel=False`) computed by `conv_transpose`, per phase.

  Same parameters (`kernel` HWIO, `bias`), so checkpoints move between implementations;
  `impl` picks the convolutions inside ("fast": `conv_valid`, "xla": XLA's own). Called with
  a `window`, computes only that part of the output (see `conv_transpose`).
  """

  features: int
  kernel_size: int | Sequence[int]
  strides: int | Sequence[int] = (1, 1)
  padding: str | Sequence[tuple[int, int]] = "SAME"
  use_bias: bool = True
  precision: lax.PrecisionLike = None
  kernel_init: Callable = nn.initializers.lecun_normal()
  bias_init: Callable = nn.initializers.zeros
  impl: str = "fast"

  @nn.compact
  def __call__(
    self,
    x: jnp.ndarray,
    window: Window | None = None,
    origin: tuple[int, int] = (0, 0),
    in_size: tuple[int, int] | None = None,
  ) -> jnp.ndarray:
    """The transposed convolution of `x` `(N, H, W, C)`, or only its `window` of the output."""
    kernel = self.param("kernel", self.kernel_init, (*_pair(self.kernel_size), x.shape[-1], self.features))
    y = conv_transpose(
      x,
      kernel,
      _pair(self.strides),
      self.padding,
      self.precision,
      window=window,
      origin=origin,
      in_size=in_size,
      impl=self.impl,
    )
    if self.use_bias:
      y = y + self.param("bias", self.bias_init, (self.features,))
    return y

  def input_window(self, window: Window, in_size: tuple[int, int]) -> Window:
    """The input rows and columns an output `window` reads."""
    pads = [self.padding] * 2 if isinstance(self.padding, str) else self.padding
    rows, cols = (_transpose_phases(k, s, p) for k, s, p in zip(_pair(self.kernel_size), _pair(self.strides), pads))
    return _input_window(window, rows, cols, in_size)


class SubpixelConv(nn.Module):
  """`nn.Conv(scale**2 * features, kernel_size, padding="SAME")` then `depth_to_space(scale)`,
  with `nn.Conv`'s parameters, computed by `subpixel_conv` (windows as `ConvTranspose`)."""

  features: int
  kernel_size: int | Sequence[int] = (3, 3)
  scale: int = 2
  precision: lax.PrecisionLike = None
  kernel_init: Callable = nn.initializers.lecun_normal()
  bias_init: Callable = nn.initializers.zeros
  impl: str = "fast"

  @nn.compact
  def __call__(
    self,
    x: jnp.ndarray,
    window: Window | None = None,
    origin: tuple[int, int] = (0, 0),
    in_size: tuple[int, int] | None = None,
  ) -> jnp.ndarray:
    """The sub-pixel convolution of `x` `(N, H, W, C)`, or only its `window` of the output."""
    out = self.scale**2 * self.features
    kernel = self.param("kernel", self.kernel_init, (*_pair(self.kernel_size), x.shape[-1], out))
    bias = self.param("bias", self.bias_init, (out,))
    return subpixel_conv(
      x, kernel, self.scale, self.precision, bias=bias, window=window, origin=origin, in_size=in_size, impl=self.impl
    )

  def input_window(self, window: Window, in_size: tuple[int, int]) -> Window:
    """The input rows and columns an output `window` reads."""
    return _input_window(window, *(_subpixel_phases(k, self.scale) for k in _pair(self.kernel_size)), in_size)


def _pair(v):
  return (v, v) if isinstance(v, int) else tuple(v)


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
  taps = [
    lax.dot_general(
      x[:, i : i + h, j : j + w].reshape(-1, x.shape[3]), g, (((0,), (0,)), ((), ())), precision=precision
    )
    for i in range(ky)
    for j in range(kx)
  ]
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


_CONV_MODULES = {
  "xla": nn.Conv,
  "fast": functools.partial(nn.Conv, conv_general_dilated=fast_conv_general_dilated),
  "hybrid": functools.partial(nn.Conv, conv_general_dilated=hybrid_conv_general_dilated),
}
