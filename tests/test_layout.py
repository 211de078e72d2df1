"""The package's layout stays true: stages import only earlier stages, infrastructure imports no
stage, only the commands write files, and no two modules share a name."""

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "jaxprobe"
STAGES = ("agents", "saliency", "collection", "generator", "search", "evaluation", "report")  # pipeline order
INFRASTRUCTURE = ("errors", "config", "envs", "conv", "norm", "parallel", "bundle", "files", "stops", "runs", "hosts")


def part_of(module: str) -> str:
  """The top-level part of the package a dotted module name belongs to."""
  parts = module.split(".")
  return parts[1] if len(parts) > 1 else ""


def imports(path: Path) -> set[str]:
  """Every jaxprobe module a file imports, at any depth (function-level imports too)."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      found |= {a.name for a in node.names if a.name.startswith("jaxprobe.")}
    elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("jaxprobe"):
      found |= {f"{node.module}.{a.name}" if node.module == "jaxprobe" else node.module for a in node.names}
  return found


def modules():
  return sorted(p for p in PACKAGE.rglob("*.py"))


def name_of(path: Path) -> str:
  return ".".join(("jaxprobe", *path.relative_to(PACKAGE).with_suffix("").parts))


def test_every_module_belongs_to_a_known_part():
  parts = {part_of(name_of(p)) for p in modules()} - {"__init__", "cli", "commands"}
  assert parts <= set(STAGES) | set(INFRASTRUCTURE), parts - set(STAGES) - set(INFRASTRUCTURE)


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_run_down_the_pipeline(path):
  mine = part_of(name_of(path))
  for target in imports(path):
    theirs = part_of(target)
    if mine in INFRASTRUCTURE:
      assert theirs in INFRASTRUCTURE, f"infrastructure module {path.name} imports {target}"
    elif mine in STAGES:
      assert theirs in INFRASTRUCTURE or (theirs in STAGES and STAGES.index(theirs) <= STAGES.index(mine)), (
        f"stage {mine} imports the later stage or command {target}"
      )
    elif mine == "commands":
      assert theirs != "cli", f"{path.name} imports the CLI"


def test_no_two_modules_share_a_name():
  names = {}
  for path in modules():
    stem = path.parent.name if path.stem == "__init__" else path.stem
    names.setdefault(stem, []).append(str(path.relative_to(PACKAGE)))
  shared = {k: v for k, v in names.items() if len(v) > 1 and k != "jaxprobe"}
  assert not shared, shared


@pytest.mark.parametrize("part", STAGES)
def test_stages_write_no_images_or_json(part):
  # File output (images, JSON, HTML, run directories) belongs to jaxprobe/commands; a stage may
  # read and write only its own artifact format (agent and generator checkpoints, datasets).
  for path in (PACKAGE / part).rglob("*.py") if (PACKAGE / part).is_dir() else [PACKAGE / f"{part}.py"]:
    text = path.read_text()
    writers = [r"save_png\(", r"write_atomic\(", r"RunDir\(", r"\.savefig\((?!buf)", r"write_text\(", r"np\.save\("]
    if part != "collection":  # the dataset's manifest and progress files
      writers.append(r"write_json\(")
    for writer in writers:
      if re.search(writer, text):
        pytest.fail(f"{path.relative_to(PACKAGE)} calls {writer}: file output belongs in jaxprobe/commands")
