"""Pickles read as data: an unpickler that resolves only the names a format needs.

A pickle can name any importable function and call it, so loading a downloaded one with
`pickle.load` runs whatever code its author chose. `RestrictedUnpickler` resolves a name only
through its `allowed` table, whose entries are stand-ins written here (never the library's own
function), and refuses any other name with a `UserError` before anything is called. BUILD (set
an object's state) is passed to `build`, which refuses it unless a subclass allows it for the
object at hand.

The numpy stand-ins rebuild arrays, dtypes and scalars of plain numeric types only (bool, int,
float), each a fresh copy built from checked bytes: numpy's own constructor and `__setstate__`
are never reached with a file's data, so no array can view memory it does not own.
"""

from __future__ import annotations

import io
import math
import pickle
from typing import Any, Callable

import numpy as np

from jaxprobe.errors import UserError

NUMERIC_KINDS = "biuf"  # bool, signed, unsigned, float: what parameters and states are made of
BYTE_ORDERS = "<>|="


def numeric_dtype(dtype: Any) -> np.dtype:
  """`dtype` if it is a plain numeric numpy dtype exactly as `np.dtype(its name)` builds it, else
  a UserError (object, structured, sub-array and hand-set flags refused)."""
  if not isinstance(dtype, np.dtype) or dtype.kind not in NUMERIC_KINDS:
    raise UserError(f"the file holds data of type {ascii(dtype)[:40]}; only numeric arrays are read")
  clean = np.dtype(dtype.str)
  if dtype.fields is not None or dtype.subdtype is not None or dtype.hasobject or dtype.flags != clean.flags:
    raise UserError(f"the file holds a malformed data type ({ascii(dtype)[:40]}); only numeric arrays are read")
  return dtype


class _ArrayClass:
  """What `numpy.ndarray` resolves to: a token that `_reconstruct` accepts as its class and that
  builds nothing itself (numpy's own constructor would let a file make views of freed buffers)."""


ARRAY_CLASS = _ArrayClass()


class _FreshArray(np.ndarray):
  """An empty array from `_reconstruct`, whose state BUILD may set once (then it is a plain ndarray)."""


class _FreshDtype:
  """A dtype name from `numpy.dtype`, until BUILD gives its byte order: then a clean `np.dtype`."""

  def __init__(self, name: str):
    self.name = name


def _dtype(name: Any, align: bool = False, copy: bool = True) -> _FreshDtype:
  """`numpy.dtype` for pickles: only the name is kept; BUILD turns it into a clean dtype."""
  if not isinstance(name, str) or len(name) > 8:
    raise UserError("a dtype record is malformed")
  try:
    numeric_dtype(np.dtype(name))
  except TypeError:
    raise UserError(f"the file holds data of type {ascii(name)}; only numeric arrays are read") from None
  return _FreshDtype(name)


def dtype_from_state(fresh: Any, state: Any) -> np.dtype:
  """The dtype a `_FreshDtype` and its pickled state describe; only the state numpy writes for a
  plain numeric dtype is accepted, and the dtype is built anew (never set from the file)."""
  if not (
    isinstance(fresh, _FreshDtype)
    and isinstance(state, tuple)
    and len(state) == 8
    and state[0] == 3
    and isinstance(state[1], str)
    and state[1] in BYTE_ORDERS
    and state[2:] == (None, None, None, -1, -1, 0)
  ):
    raise UserError("a dtype record is malformed")
  return numeric_dtype(np.dtype(fresh.name).newbyteorder(state[1]))


def _reconstruct(cls: Any, shape: Any, _typecode: Any) -> _FreshArray:
  """numpy's `_reconstruct`: an empty array whose state BUILD sets."""
  if cls is not ARRAY_CLASS:
    raise UserError("the file builds an array subclass; only plain numpy arrays are read")
  return np.empty(0, np.uint8).view(_FreshArray)


def _scalar(dtype: Any, data: Any = None) -> Any:
  """numpy's `scalar`: one value of a numeric dtype from its bytes."""
  dtype = numeric_dtype(dtype)
  if not isinstance(data, bytes) or len(data) != dtype.itemsize:
    raise UserError("a numpy scalar record is malformed")
  return np.frombuffer(data, dtype).copy()[0]


def _shape(shape: Any) -> tuple[int, ...]:
  if not (isinstance(shape, tuple) and len(shape) <= 8 and all(type(n) is int and n >= 0 for n in shape)):
    raise UserError("an array record has a malformed shape")
  return shape


def _frombuffer(data: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
  """numpy's `_frombuffer` (pickle protocol 5): a copy of `data` as an array."""
  dtype, shape = numeric_dtype(dtype), _shape(shape)
  if not isinstance(data, (bytes, bytearray)) or order not in ("C", "F"):
    raise UserError("an array record is malformed")
  if len(data) != math.prod(shape) * dtype.itemsize:
    raise UserError("an array record does not hold as many bytes as its shape needs")
  return np.frombuffer(bytes(data), dtype).reshape(shape, order=order).copy(order="C")


def array_from_state(array: Any, state: Any) -> np.ndarray:
  """`ndarray.__setstate__` on a `_FreshArray` (once), after checking the state: a numeric dtype,
  a shape, and exactly as many bytes as they need."""
  if not (isinstance(array, _FreshArray) and isinstance(state, tuple) and len(state) == 5):
    raise UserError("an array record is malformed")
  _, shape, dtype, fortran, data = state
  dtype, shape = numeric_dtype(dtype), _shape(shape)
  if not isinstance(data, bytes) or type(fortran) is not bool or len(data) != math.prod(shape) * dtype.itemsize:
    raise UserError("an array record does not hold as many bytes as its shape needs")
  return np.frombuffer(data, dtype).reshape(shape, order="F" if fortran else "C").copy(order="C")


NUMPY = {
  ("numpy", "ndarray"): ARRAY_CLASS,
  ("numpy", "dtype"): _dtype,
  **{(module, "_reconstruct"): _reconstruct for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
  **{(module, "scalar"): _scalar for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
  **{(module, "_frombuffer"): _frombuffer for module in ("numpy.core.numeric", "numpy._core.numeric")},
}


class RestrictedUnpickler(pickle._Unpickler):  # the Python implementation, whose opcodes can be overridden
  """Resolves only `allowed` names; `where` names the file in errors."""

  dispatch = dict(pickle._Unpickler.dispatch)
  allowed: dict[tuple[str, str], Any] = {}
  what = "plain containers"  # what the format reads, for the refusal

  def __init__(self, file: io.BytesIO, where: str):
    super().__init__(file)
    self.where = where
    self.rebuilt: dict[int, tuple[Any, Any]] = {}

  def resolve(self, module: str, name: str) -> Any:
    """The stand-in for `module.name`, or KeyError: subclasses add names computed per file."""
    return self.allowed[(module, name)]

  def find_class(self, module: str, name: str) -> Any:
    """pickle's hook for every name a file uses: `resolve`d, or the file refused."""
    try:
      return self.resolve(module, name)
    except (KeyError, TypeError):
      raise UserError(
        f"{self.where} asks to run {ascii(module)[1:-1][:60]}.{ascii(name)[1:-1][:40]} when loaded; jaxprobe "
        f"reads only {self.what} from it and refuses it (nothing was run)"
      ) from None

  def build(self, obj: Any, state: Any) -> Any:
    """The object `obj` becomes with `state` (BUILD): numpy arrays and dtypes are built anew from a
    checked state; anything else is refused unless a subclass allows it."""
    if isinstance(obj, _FreshArray):
      return array_from_state(obj, state)
    if isinstance(obj, _FreshDtype):
      return dtype_from_state(obj, state)
    raise UserError(f"{self.where} sets the state of a {type(obj).__name__}; refused (nothing was run)")

  def load_build(self) -> None:
    """The BUILD opcode: the object on the stack is replaced by what `build` makes of it (and so is
    every later memo reference to it)."""
    state = self.stack.pop()
    old = self.stack[-1]
    self.stack[-1] = new = self.build(old, state)
    if new is not old:
      self.rebuilt[id(old)] = (old, new)  # the old object kept, so that its id is not reused

  def load_memo_get(self, opcode: bytes) -> None:
    """GET opcodes: what the memo holds, or what BUILD made of it."""
    self.dispatch_default[opcode[0]](self)
    entry = self.rebuilt.get(id(self.stack[-1]))
    if entry is not None and entry[0] is self.stack[-1]:
      self.stack[-1] = entry[1]

  dispatch_default = dict(pickle._Unpickler.dispatch)
  for _op in (pickle.GET, pickle.BINGET, pickle.LONG_BINGET):
    dispatch[_op[0]] = lambda self, _op=_op: self.load_memo_get(_op)
  del _op

  dispatch[pickle.BUILD[0]] = load_build


def load_checked(make: Callable[[], RestrictedUnpickler], where: str, damaged: str) -> Any:
  """`make().load()`, every failure one UserError naming `where`: the unpickler's own refusals
  (prefixed with `where` where they lack it), and anything else, which a damaged file raises in
  many types, as `where` followed by `damaged` with `{error}` filled in."""
  try:
    return make().load()
  except UserError as e:
    raise e if str(e).startswith(where) else UserError(f"{where}: {e}") from None
  except Exception as e:
    first = (str(e).strip().splitlines() or [""])[0][:120]
    raise UserError(f"{where} " + damaged.format(error=f"{type(e).__name__}: {first}")) from None
