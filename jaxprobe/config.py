"""Frozen-dataclass configs filled from YAML files, dotted overrides and command-line flags.

    cfg = load_config(PPOConfig, "configs/pong_ppo.yaml", ["lr=1e-4", "env.num_envs=16"])

Unknown fields and values of the wrong type are user errors naming the field,
so a typo in a YAML file never silently falls back to a default. A field declared with
`option(default, help)` is also a command-line flag (`add_flags`): its name, type,
default and help are written once, in the dataclass.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Iterable, TypeVar

import yaml

from jaxprobe.errors import UserError

T = TypeVar("T")


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


def option(default: Any, help: str, flag: str | None = None) -> Any:
  """A config field that is also a command-line flag (`--name-with-dashes`, or `flag`)."""
  return dataclasses.field(default=default, metadata=dict(help=help, flag=flag))


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
      kwargs["type"] = annotation
    elif annotation is not str:
      raise TypeError(f"config field {cls.__name__}.{f.name} of type {annotation!r} cannot be a flag")
    parser.add_argument(flag, **kwargs)


def from_flags(cls: type[T], args: argparse.Namespace, **values: Any) -> T:
  """`cls` from the parsed flags of its `option` fields, with `values` for the other fields."""
  flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if "help" in f.metadata}
  return cls(**flags, **values)
