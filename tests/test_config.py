"""Configs: YAML fills frozen dataclasses; unknown fields and wrong types are user errors."""

import dataclasses
from typing import Literal

import pytest

from jaxprobe.config import load_config, to_dict
from jaxprobe.errors import UserError


@dataclasses.dataclass(frozen=True)
class Env:
  env_id: str = "Pong-v5"
  num_envs: int = 8


@dataclasses.dataclass(frozen=True)
class Train:
  lr: float = 2.5e-4
  algo: Literal["dqn", "ppo"] = "ppo"
  anneal: bool = True
  widths: tuple[int, ...] = (32, 64)
  env: Env = Env()


def test_yaml_then_overrides(tmp_path):
  path = tmp_path / "c.yaml"
  path.write_text("lr: 1e-3\nalgo: dqn\nenv:\n  num_envs: 4\nwidths: [16, 32, 64]\n")
  cfg = load_config(Train, path, ["env.env_id=Seaquest-v5", "lr=5e-4", "anneal=false"])
  assert cfg == Train(lr=5e-4, algo="dqn", anneal=False, widths=(16, 32, 64), env=Env("Seaquest-v5", 4))
  assert to_dict(cfg)["widths"] == [16, 32, 64]
  with pytest.raises(dataclasses.FrozenInstanceError):
    cfg.lr = 1.0


@pytest.mark.parametrize(
  "text, message",
  [
    ("lrr: 1.0\n", "unknown config field 'lrr'"),
    ("env:\n  num_env: 2\n", "unknown config field 'env.num_env'"),
    ("lr: fast\n", "'lr' must be a number"),
    ("env:\n  num_envs: 2.5\n", "'env.num_envs' must be an integer"),
    ("algo: a2c\n", "'algo' must be one of"),
    ("anneal: 1\n", "'anneal' must be a bool"),
    ("- 1\n- 2\n", "must hold a mapping"),
    ("lr: [1\n", "not valid YAML"),
  ],
)
def test_bad_configs_name_the_field(tmp_path, text, message):
  path = tmp_path / "c.yaml"
  path.write_text(text)
  with pytest.raises(UserError, match=message):
    load_config(Train, path)


def test_bad_overrides():
  with pytest.raises(UserError, match="field=value"):
    load_config(Train, None, ["lr"])
  with pytest.raises(UserError, match="unknown config field 'env.foo'"):
    load_config(Train, None, ["env.foo=1"])
  with pytest.raises(UserError, match="does not exist"):
    load_config(Train, "/nonexistent.yaml")
