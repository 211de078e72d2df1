"""Frozen-dataclass configs filled from YAML files, dotted overrides and command-line flags.

    cfg = load_config(PPOConfig, "configs/pong_ppo.yaml", ["lr=1e-4", "env.num_envs=16"])

Unknown fields and values of the wrong type are user errors naming the field,
so a typo in a YAML file never silently falls back to a default. A field declared with
`option(default, help)` is also a command-line flag (`add_flags`): its name, type,
default and help are written once, in the dataclass.

Every field declares the values it may take (`setting(default, POSITIVE)`, `option(..., valid=...)`;
a float is at least finite), and a config that derives from `Config` checks them, and its
cross-field rules (`Config.check`), whenever it is built: from YAML, overrides, flags or Python.
The same `Range` is the `type` of its command-line flag, so a bad flag is refused while parsing.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import types
import typing
from pathlib import Path
from typing import Any, Iterable, TypeVar

import yaml

from jaxprobe.errors import UserError

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Range:
  """The values a number may take: `kind` (int or float; a float must also be finite) between `lo` and
  `hi` (either may be None), each bound included unless open. Called on a string, it is an argparse
  `type` that refuses what it does not allow."""

  kind: type = float
  lo: float | None = None
  hi: float | None = None
  lo_open: bool = False
  hi_open: bool = False

  def allows(self, value: Any) -> bool:
    """Whether `value` is of the range's kind, finite and within its bounds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      return False
    if self.kind is int and not float(value).is_integer():
      return False
    if not math.isfinite(value):
      return False
    if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
      return False
    return self.hi is None or (value < self.hi if self.hi_open else value <= self.hi)

  def describe(self) -> str:
    """E.g. 'an integer >= 1', 'a finite number in (0, 1]'."""
    noun = "an integer" if self.kind is int else "a finite number"
    if self.lo is not None and self.hi is not None:
      return f"{noun} in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"
    if self.lo is not None:
      return f"{noun} {'>' if self.lo_open else '>='} {self.lo:g}"
    if self.hi is not None:
      return f"{noun} {'<' if self.hi_open else '<='} {self.hi:g}"
    return noun

  def __call__(self, text: str) -> Any:
    """`text` read as the range's kind, or an argparse error saying what is allowed."""
    try:
      value = self.kind(text)
    except ValueError:
      value = None
    if value is None or not self.allows(value):
      raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {text!r}")
    return value


FINITE = Range(float)  # every float field without a narrower range
POSITIVE = Range(float, lo=0, lo_open=True)
NONNEGATIVE = Range(float, lo=0)
PROBABILITY = Range(float, lo=0, hi=1)
DISCOUNT = Range(float, lo=0, hi=1, lo_open=True)
POSITIVE_INT = Range(int, lo=1)
COUNT = Range(int, lo=0)  # 0 allowed: "none" or "off"
SEED = Range(int, lo=0, hi=2**31 - 1)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
  return typing.get_type_hints(cls)


def field_label(f: dataclasses.Field) -> str:
  """How a user names field `f`: its flag if it is one, else 'config field NAME'."""
  if "help" in f.metadata:
    return f.metadata["flag"] or "--" + f.name.replace("_", "-")
  return f"config field '{f.name}'"


def check_fields(cfg: Any) -> None:
  """A UserError naming the first field of dataclass `cfg` whose value (or any item of a tuple value)
  is outside its declared `Range`."""
  hints = _hints(type(cfg))
  for f in dataclasses.fields(cfg):
    valid = f.metadata.get("valid") or (FINITE if hints[f.name] is float else None)
    value = getattr(cfg, f.name)
    if valid is None:
      continue
    items = value if isinstance(value, tuple) else (value,)
    if not items or not all(valid.allows(v) for v in items):
      what = "a non-empty list, each item " if isinstance(value, tuple) else ""
      raise UserError(f"{field_label(f)} must be {what}{valid.describe()}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class Config:
  """Base of jaxprobe's configs: building one checks every field's range, then `check`."""

  def __post_init__(self) -> None:
    check_fields(self)
    self.check()

  def check(self) -> None:
    """Rules that join fields (e.g. a batch that splits into minibatches): a UserError naming them."""


def _coerce(value: Any, annotation: Any, where: str) -> Any:
  origin = typing.get_origin(annotation)
  if dataclasses.is_dataclass(annotation):
    if not isinstance(value, dict):
      raise UserError(f"config field '{where}' must be a mapping, got {value!r}")
    return from_dict(annotation, value, prefix=where + ".")
  if origin in (typing.Union, types.UnionType):
    args = typing.get_args(annotation)
    if value is None and type(None) in args:
      return None
    errors = []
    for arg in args:
      if arg is type(None):
        continue
      try:
        return _coerce(value, arg, where)
      except UserError as e:
        errors.append(str(e))
    raise UserError(errors[0] if errors else f"config field '{where}' has an invalid value {value!r}")
  if origin is typing.Literal:
    choices = typing.get_args(annotation)
    if value not in choices:
      raise UserError(f"config field '{where}' must be one of {list(choices)}, got {value!r}")
    return value
  if origin in (tuple, list):
    if not isinstance(value, (list, tuple)):
      raise UserError(f"config field '{where}' must be a list, got {value!r}")
    args = typing.get_args(annotation)
    item = args[0] if args else Any
    return tuple(_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value))
  if annotation is Any:
    return value
  if annotation is float:
    if isinstance(value, str) and _looks_numeric(value):  # YAML reads 1e-4 as a string
      return float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise UserError(f"config field '{where}' must be a number, got {value!r}")
    return float(value)
  if annotation is int:
    if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
      raise UserError(f"config field '{where}' must be an integer, got {value!r}")
    return int(value)
  if annotation in (bool, str):
    if not isinstance(value, annotation):
      raise UserError(f"config field '{where}' must be a {annotation.__name__}, got {value!r}")
    return value
  raise TypeError(f"unsupported config annotation {annotation!r} for '{where}'")


def from_dict(cls: type[T], values: dict[str, Any], prefix: str = "") -> T:
  """Builds `cls` from a (nested) dict, checking every field name and type."""
  hints = typing.get_type_hints(cls)
  fields = {f.name: f for f in dataclasses.fields(cls)}
  unknown = sorted(set(values) - set(fields))
  if unknown:
    raise UserError(
      f"unknown config field '{prefix}{unknown[0]}' for {cls.__name__}; known fields: {', '.join(sorted(fields))}"
    )
  kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in values.items()}
  return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
  """The config as plain YAML/JSON-friendly data (tuples become lists)."""

  def plain(v):
    if isinstance(v, tuple):
      return [plain(x) for x in v]
    if isinstance(v, dict):
      return {k: plain(x) for k, x in v.items()}
    return v

  return plain(dataclasses.asdict(cfg))


def parse_override(text: str) -> tuple[list[str], Any]:
  """`a.b=value` -> (['a', 'b'], value), the value read as YAML (so 1e-4, true, [1, 2] work)."""
  if "=" not in text:
    raise UserError(f"override '{text}' must look like field=value (e.g. lr=1e-4)")
  key, raw = text.split("=", 1)
  try:
    value = yaml.safe_load(raw)
  except yaml.YAMLError:
    value = raw
  return key.strip().split("."), value


def _looks_numeric(s: str) -> bool:
  try:
    float(s)
    return True
  except ValueError:
    return False


def read_yaml(path: str | Path) -> dict[str, Any]:
  """A YAML file as a dict of field: value, or a UserError naming the file."""
  path = Path(path)
  if not path.is_file():
    raise UserError(f"config file {path} does not exist")
  try:
    data = yaml.safe_load(path.read_text())
  except yaml.YAMLError as e:
    raise UserError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
  if data is None:
    return {}
  if not isinstance(data, dict):
    raise UserError(f"config file {path} must hold a mapping of field: value")
  return data


def apply_overrides(values: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
  """`values` with each `a.b=value` override set (a new dict; nested groups are copied)."""
  values = {k: dict(v) if isinstance(v, dict) else v for k, v in values.items()}
  for text in overrides:
    keys, value = parse_override(text)
    node = values
    for k in keys[:-1]:
      node = node.setdefault(k, {})
      if not isinstance(node, dict):
        raise UserError(f"override '{text}': '{k}' is not a group of fields")
    node[keys[-1]] = value
  return values


def load_config(cls: type[T], path: str | Path | None = None, overrides: Iterable[str] = ()) -> T:
  """Defaults of `cls`, then the YAML file, then `field=value` overrides."""
  return from_dict(cls, apply_overrides(read_yaml(path) if path is not None else {}, overrides))


def setting(default: Any, valid: Range | None = None) -> Any:
  """A config field whose values must lie in `valid`."""
  return dataclasses.field(default=default, metadata=dict(valid=valid))


def option(default: Any, help: str, flag: str | None = None, valid: Range | None = None) -> Any:
  """A config field that is also a command-line flag (`--name-with-dashes`, or `flag`), its values in `valid`."""
  return dataclasses.field(default=default, metadata=dict(help=help, flag=flag, valid=valid))


def add_flags(parser: argparse.ArgumentParser, cls: type) -> None:
  """One flag per `option` field of `cls`, typed and with the field's default and help."""
  hints = typing.get_type_hints(cls)
  for f in dataclasses.fields(cls):
    if "help" not in f.metadata:
      continue
    flag = f.metadata["flag"] or "--" + f.name.replace("_", "-")
    annotation = hints[f.name]
    kwargs: dict[str, Any] = dict(dest=f.name, default=f.default, help=f"{f.metadata['help']} (default: {f.default})")
    if typing.get_origin(annotation) is typing.Literal:
      kwargs["choices"] = typing.get_args(annotation)
    elif annotation in (int, float):
      kwargs["type"] = f.metadata.get("valid") or (FINITE if annotation is float else int)
    elif annotation is not str:
      raise TypeError(f"config field {cls.__name__}.{f.name} of type {annotation!r} cannot be a flag")
    parser.add_argument(flag, **kwargs)


def from_flags(cls: type[T], args: argparse.Namespace, **values: Any) -> T:
  """`cls` from the parsed flags of its `option` fields, with `values` for the other fields."""
  flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if "help" in f.metadata}
  return cls(**flags, **values)
