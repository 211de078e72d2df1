"""Pickles read as data: an unpickler that resolves only the names a format needs.

A pickle can name any importable function and call it, so loading a downloaded one with
`pickle.load` runs whatever code its author chose. `RestrictedUnpickler` resolves a name only
through its `allowed` table, whose entries are stand-ins written here (never the library's own
function), and refuses any other name with a `UserError` before anything is called. BUILD (set
an object's state) is passed to `build`, which refuses it unless a subclass allows it for the
object at hand.

The numpy stand-ins rebuild arrays, dtypes and scalars of plain numeric types only, so an
object array (whose elements are pickles again) cannot be made.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import numpy as np

from jaxprobe.errors import UserError

NUMERIC_KINDS = "biufc"  # bool, signed, unsigned, float, complex


def numeric_dtype(dtype: Any) -> np.dtype:
  """`dtype` if it is a plain numeric numpy dtype, else a UserError (object and structured refused)."""
  if not isinstance(dtype, np.dtype) or dtype.kind not in NUMERIC_KINDS or dtype.fields is not None:
    raise UserError(f"the file holds data of type {dtype!r}; only numeric arrays are read")
  return dtype


def _dtype(name: Any, align: bool = False, copy: bool = True) -> np.dtype:
  """`numpy.dtype` for pickles: a fresh copy (never numpy's shared instance, whose state BUILD
  then sets), numeric only."""
  if not isinstance(name, str):
    raise UserError("a dtype record is malformed")
  try:
    dtype = np.dtype(name, align=bool(align), copy=True)
  except TypeError:
    raise UserError(f"the file holds data of type {name!r}; only numeric arrays are read") from None
  return numeric_dtype(dtype)


def _reconstruct(cls: Any, shape: Any, _typecode: Any) -> np.ndarray:
  """numpy's `_reconstruct`: an empty `ndarray` whose state BUILD sets."""
  if cls is not np.ndarray:
    raise UserError("the file builds an array subclass; only plain numpy arrays are read")
  return np.empty(0, np.uint8)


def _scalar(dtype: Any, data: Any = None) -> Any:
  """numpy's `scalar`: one value of a numeric dtype from its bytes."""
  dtype = numeric_dtype(dtype)
  if not isinstance(data, bytes) or len(data) != dtype.itemsize:
    raise UserError("a numpy scalar record is malformed")
  return np.frombuffer(data, dtype)[0]


def set_array_state(array: Any, state: Any) -> np.ndarray:
  """`ndarray.__setstate__` after checking the state names a numeric dtype."""
  if not (isinstance(array, np.ndarray) and isinstance(state, tuple) and len(state) == 5):
    raise UserError("an array record is malformed")
  numeric_dtype(state[2])
  array.__setstate__(state)
  return array


NUMPY = {
  ("numpy", "ndarray"): np.ndarray,
  ("numpy", "dtype"): _dtype,
  **{(module, "_reconstruct"): _reconstruct for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
  **{(module, "scalar"): _scalar for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
}


class RestrictedUnpickler(pickle._Unpickler):  # the Python implementation, whose opcodes can be overridden
  """Resolves only `allowed` names; `where` names the file in errors."""

  dispatch = dict(pickle._Unpickler.dispatch)
  allowed: dict[tuple[str, str], Any] = {}
  what = "plain containers"  # what the format reads, for the refusal

  def __init__(self, file: io.BytesIO, where: str):
    super().__init__(file)
    self.where = where

  def resolve(self, module: str, name: str) -> Any:
    """The stand-in for `module.name`, or KeyError: subclasses add names computed per file."""
    return self.allowed[(module, name)]

  def find_class(self, module: str, name: str) -> Any:
    """pickle's hook for every name a file uses: `resolve`d, or the file refused."""
    try:
      return self.resolve(module, name)
    except KeyError:
      raise UserError(
        f"{self.where} asks to run {module}.{name} when loaded; jaxprobe reads only {self.what} from it and "
        "refuses it (nothing was run)"
      ) from None

  def build(self, obj: Any, state: Any) -> None:
    """Sets `obj`'s state; refused unless a subclass allows it for `obj`."""
    raise UserError(f"{self.where} sets the state of a {type(obj).__name__}; refused (nothing was run)")

  def load_build(self) -> None:
    """The BUILD opcode: hands the object and its state to `build`."""
    state = self.stack.pop()
    self.build(self.stack[-1], state)

  dispatch[pickle.BUILD[0]] = load_build
