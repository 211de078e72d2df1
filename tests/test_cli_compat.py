"""Nothing a user typed before breaks: every subcommand's options as captured before the
command line was rebuilt from the configs (tests/data/cli_options.json), each parsed with the
same meaning, and the FIELD=VALUE override form of the trainers."""

import json
from pathlib import Path

import pytest

from jaxprobe.cli import build_parser

CAPTURED = json.loads((Path(__file__).parent / "data" / "cli_options.json").read_text())


def sample(option: dict, i: int):
  """(argv words, expected parsed value) for one option."""
  if option["action"] == "_StoreTrueAction":
    return [option["flags"][0]], True
  if option["choices"]:
    value = option["choices"][-1]
    text, parsed = str(value), value
  elif option["type"] == "int":
    text, parsed = str(7 + i), 7 + i
  elif option["type"] == "float":
    text, parsed = f"0.{i + 1}25", float(f"0.{i + 1}25")
  else:
    text, parsed = f"value{i}", f"value{i}"
  if option["action"] == "_AppendAction":
    return [option["flags"][0], text, option["flags"][0], text + "b"], [parsed, text + "b"]
  if option["nargs"] == "+":
    return [text, text + "b"], [parsed, text + "b"]
  if option["nargs"] == "*":
    return ["lr=1e-4", "env_id=Seaquest-v5"], ["lr=1e-4", "env_id=Seaquest-v5"]
  return ([option["flags"][0]] if option["flags"] else []) + [text], parsed


@pytest.mark.parametrize("command", sorted(CAPTURED))
def test_every_option_parses_with_the_same_meaning(command):
  options = CAPTURED[command]
  words, expected = command.split(), {}
  for i, option in enumerate(options):
    argv, value = sample(option, i)
    words += argv
    expected[option["dest"]] = value
  args = build_parser().parse_args(words)
  for dest, value in expected.items():
    assert getattr(args, dest) == value, (command, dest)


@pytest.mark.parametrize("command", sorted(CAPTURED))
def test_defaults_are_unchanged(command):
  options = CAPTURED[command]
  words = command.split()
  for i, option in enumerate(options):
    if option["required"]:
      words += sample(option, i)[0]
  args = build_parser().parse_args(words)
  for option in options:
    if not option["required"]:
      assert getattr(args, option["dest"]) == option["default"], (command, option["dest"])


def test_trainer_overrides_keep_their_form(tmp_path):
  from jaxprobe.commands.train_agent import load_training_config

  config = tmp_path / "ppo.yaml"
  config.write_text("algorithm: ppo\nenv_id: Pong-v5\n")
  args = build_parser().parse_args(
    ["train-agent", "--config", str(config), "--out", "o", "lr=1e-4", "total_steps=2048"]
  )
  algorithm, cfg = load_training_config(args.config, args.overrides)
  assert algorithm == "ppo" and cfg.lr == 1e-4 and cfg.total_steps == 2048
