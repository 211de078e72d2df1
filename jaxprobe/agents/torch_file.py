"""Tensors from a file written by `torch.save`, read as data: no PyTorch, and no pickled code run.

Since PyTorch 1.6 `torch.save` writes a zip archive: `<name>/data.pkl` is a pickle of the saved
object (for a model, its `state_dict`: an `OrderedDict` of tensors), and each tensor's storage
is a raw little-endian byte file `<name>/data/<key>`. In the pickle a tensor is a call to
`torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)`, its
storage a persistent id `("storage", <torch.XStorage>, key, location, numel)`.

A pickle can name any importable function and call it, so the unpickler here resolves only
those few names, each to a plain numpy stand-in; any other name refuses the file with a
`UserError` naming it, before anything is called. It also refuses what a crafted file could do
with the names it allows: a tensor view outside its storage, a state set on anything but an
`OrderedDict`, and archives that unpack to more than `MAX_BYTES`.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import math
import zipfile
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from jaxprobe.agents.pickled import RestrictedUnpickler, load_checked
from jaxprobe.errors import UserError

STORAGE_DTYPES = {
  "FloatStorage": np.float32,
  "DoubleStorage": np.float64,
  "HalfStorage": np.float16,
  "BFloat16Storage": ml_dtypes.bfloat16,
  "LongStorage": np.int64,
  "IntStorage": np.int32,
  "ShortStorage": np.int16,
  "CharStorage": np.int8,
  "ByteStorage": np.uint8,
  "BoolStorage": np.bool_,
}


MAX_BYTES = 4 << 30  # of all storages together: an Atari agent has a few MB; more is refused


@dataclasses.dataclass(frozen=True)
class _Storage:
  """What a storage type's name resolves to: its dtype."""

  dtype: Any


def _rebuild_tensor(storage: np.ndarray, offset: int, size: tuple, stride: tuple, *_: Any) -> np.ndarray:
  """`torch._utils._rebuild_tensor_v2`: the view of `storage` the file describes, copied out, after
  checking that it lies inside the storage (a crafted file could otherwise read past it)."""
  ints = lambda xs: isinstance(xs, tuple) and all(type(x) is int and x >= 0 for x in xs)
  if not (isinstance(storage, np.ndarray) and type(offset) is int and ints(size) and ints(stride)):
    raise UserError("a tensor record is malformed")
  if len(size) != len(stride) or offset > storage.size:
    raise UserError("a tensor record does not fit its storage")
  if not size:
    if offset >= storage.size:
      raise UserError("a tensor record does not fit its storage")
    return np.array(storage[offset])
  if 0 not in size and (
    offset + sum((n - 1) * s for n, s in zip(size, stride)) >= storage.size or math.prod(size) > storage.size
  ):
    raise UserError("a tensor record does not fit its storage")
  strides = tuple(s * storage.itemsize for s in stride)
  return np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size), strides=strides).copy()


def _rebuild_parameter(data: np.ndarray, *_: Any) -> np.ndarray:
  """`torch._utils._rebuild_parameter`: a parameter is its data."""
  return data


ALLOWED = {
  ("collections", "OrderedDict"): collections.OrderedDict,
  ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
  ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
  **{("torch", name): _Storage(dtype) for name, dtype in STORAGE_DTYPES.items()},
}


class _Unpickler(RestrictedUnpickler):
  allowed = ALLOWED
  what = "tensors and plain containers"

  def __init__(self, file: io.BytesIO, archive: zipfile.ZipFile, prefix: str, where: str):
    super().__init__(file, where)
    self.archive, self.prefix = archive, prefix
    self.storages: dict[str, np.ndarray] = {}
    self.copied = 0

  def rebuild_tensor(self, *args: Any) -> np.ndarray:
    """`_rebuild_tensor`, counting what it copies: a storage referred to again and again (a few
    bytes of pickle each) must not make a small file fill the memory."""
    tensor = _rebuild_tensor(*args)
    self.copied += tensor.nbytes
    if self.copied > 4 * sum(a.nbytes for a in self.storages.values()) + (1 << 20):
      raise UserError(f"{self.where} builds far more tensor data than it stores; refused")
    return tensor

  def resolve(self, module: str, name: str) -> Any:
    if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
      return self.rebuild_tensor
    return super().resolve(module, name)

  def build(self, obj: Any, state: Any) -> Any:
    """BUILD sets an object's state: allowed on an OrderedDict only (a state dict's `_metadata`,
    which is not needed and dropped), so a file cannot change the objects `ALLOWED` names."""
    if not isinstance(obj, collections.OrderedDict):
      return super().build(obj, state)
    return obj

  def persistent_load(self, pid: Any) -> np.ndarray:
    if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _Storage)):
      raise UserError(f"{self.where} holds a storage record jaxprobe does not know ({str(pid)[:80]})")
    _, storage, key, _location, numel = pid
    if key not in self.storages:  # read once, however often the pickle refers to it
      data = self.archive.read(f"{self.prefix}data/{key}")
      array = np.frombuffer(data, dtype=np.dtype(storage.dtype).newbyteorder("<"))
      if type(numel) is not int or array.size < numel:
        raise UserError(f"{self.where}: storage {key} holds {array.size} values, the file says {numel}")
      self.storages[key] = array
    return self.storages[key]


def load_torch_file(data: bytes, where: str) -> Any:
  """The object `torch.save` wrote into `data` (tensors as numpy arrays); `where` names it in errors."""
  try:
    archive = zipfile.ZipFile(io.BytesIO(data))
    pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
  except zipfile.BadZipFile:
    raise UserError(
      f"{where} is not a PyTorch file of the zip format (PyTorch >= 1.6); save it again with torch.save"
    ) from None
  if len(pickles) != 1:
    raise UserError(f"{where} is not a PyTorch file: it has {len(pickles)} data.pkl entries, not one")
  if sum(info.file_size for info in archive.infolist()) > MAX_BYTES:
    raise UserError(f"{where} unpacks to more than {MAX_BYTES >> 30} GiB; no Atari agent is that large")
  prefix = pickles[0][: -len("data.pkl")]
  byteorder = f"{prefix}byteorder"  # absent in files of older PyTorch, which wrote little-endian
  if byteorder in archive.namelist() and archive.read(byteorder).strip() != b"little":
    raise UserError(f"{where} was written on a big-endian machine, which jaxprobe does not read")
  return load_checked(
    lambda: _Unpickler(io.BytesIO(archive.read(pickles[0])), archive, prefix, where),
    where,
    "is damaged ({error}); download or save it again",
  )


def read_torch_file(path: str | Path) -> Any:
  """`load_torch_file` of the file at `path`."""
  return load_torch_file(Path(path).read_bytes(), str(path))
