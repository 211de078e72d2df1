"""README's examples work: its Python API block runs (with tiny search sizes), and every
`jaxprobe ...` command line it shows parses with the command line of today."""

import re
import shlex
from pathlib import Path

import pytest

from jaxprobe.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def blocks(language: str) -> list[str]:
  return re.findall(rf"```{language}\n(.*?)```", README, re.S)


def command_lines() -> list[str]:
  lines, text = [], "\n".join(blocks("bash"))
  for line in text.replace("\\\n", " ").splitlines():
    line = line.split("#")[0].strip()
    if line.startswith("jaxprobe "):
      lines.append(line)
  return lines


def test_readme_shows_commands():
  assert len(command_lines()) >= 15


@pytest.mark.parametrize("line", command_lines())
def test_readme_command_parses(line):
  build_parser().parse_args(shlex.split(line)[1:])


def test_readme_python_api_runs(monkeypatch):
  (code,) = [b for b in blocks("python") if "import jaxprobe" in b or "from jaxprobe" in b]
  tiny = code.replace("num=256, steps=200", "num=2, steps=2")
  assert tiny != code, "the README's probe call changed: update this test's size substitution"
  monkeypatch.chdir(ROOT)
  scope: dict = {}
  exec(compile(tiny, "README.md", "exec"), scope)
  assert scope["mask"].shape == (8, 84, 84) and scope["results"][0].gray.shape == (2, 4, 84, 84)
