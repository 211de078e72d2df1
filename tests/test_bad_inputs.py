"""The catalogue of bad inputs: every command refuses each one before any work starts, with one line on
stderr that names the field or file at fault, exit code 2, no traceback, and nothing already on disk
changed (README, 'Command line')."""

import dataclasses
import hashlib
import json
import shutil
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxprobe.agents import Agent, AgentSpec, save_agent
from jaxprobe.agents.checkpoint import load_agent
from jaxprobe.cli import main
from jaxprobe.collection.recorder import collect
from jaxprobe.generator.spec import save_generator
from tests.test_probe import tiny_generator


@pytest.fixture(scope="module")
def world(pong_q_agent_path, tmp_path_factory):
  """Files of every kind a command reads, good and damaged, in one folder whose bytes no case may change."""
  root = tmp_path_factory.mktemp("world")
  agent = load_agent(pong_q_agent_path)
  shutil.copytree(pong_q_agent_path, root / "agent")
  collect(agent, root / "data", 16, num_envs=2, seed=3, progress=False)
  save_generator(root / "gen", tiny_generator(agent))
  other = Agent(AgentSpec("q", 6, "Pong-v5"), AgentSpec("q", 6, "Pong-v5").init(jax.random.key(5)), {})
  save_generator(root / "other-gen", tiny_generator(other))
  seaquest = AgentSpec("q", 18, "Seaquest-v5")
  collect(Agent(seaquest, seaquest.init(jax.random.key(1)), {}), root / "seaquest-data", 16, num_envs=2, progress=False)
  # Damaged copies: bytes overwritten in the largest params file, and finite values that are not the saved ones.
  shutil.copytree(root / "agent", root / "agent-bytes")
  biggest = max(
    (p for p in (root / "agent-bytes" / "params").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size
  )
  with open(biggest, "r+b") as f:
    f.seek(biggest.stat().st_size // 2)
    f.write(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
  save_agent(root / "agent-random", other)
  spec = json.loads((root / "agent" / "agent.json").read_text())
  random_spec = json.loads((root / "agent-random" / "agent.json").read_text())
  random_spec["params_sha256"] = spec["params_sha256"]  # finite random values under the original's checksum
  (root / "agent-random" / "agent.json").write_text(json.dumps(random_spec))
  shutil.copytree(root / "data", root / "data-changed")
  gray = np.load(root / "data-changed" / "gray.npy", mmap_mode="r+")
  gray[0, 0, 0, 0] ^= 0xFF
  gray.flush()
  del gray
  shutil.copytree(root / "gen", root / "gen-latent")  # latent_dim edited in its spec
  meta = json.loads((root / "gen-latent" / "generator.json").read_text())
  (root / "gen-latent" / "generator.json").write_text(json.dumps(dict(meta, latent_dim=9)))
  assert main(["probe", "--agent", str(root / "agent"), "--generator", str(root / "gen"), "--num", "2", "--steps", "1",
               "--out", str(root / "run"), "--quiet"]) == 0  # fmt: skip
  shutil.copytree(root / "run", root / "run-missing")
  next((root / "run-missing").glob("*/gray.npy")).unlink()
  shutil.copytree(root / "run", root / "run-truncated")
  colour = next((root / "run-truncated").glob("*/colour.npy"))
  colour.write_bytes(colour.read_bytes()[:200])
  # Finite values that are not the saved ones, under the saved checksum.
  generator = tiny_generator(agent)
  save_generator(root / "gen-random", dataclasses.replace(generator, variables=generator.spec.init(jax.random.key(9))))
  random_spec = json.loads((root / "gen-random" / "generator.json").read_text())
  random_spec["params_sha256"] = json.loads((root / "gen" / "generator.json").read_text())["params_sha256"]
  (root / "gen-random" / "generator.json").write_text(json.dumps(random_spec))
  (root / "not-a-run").mkdir()
  (root / "run-no-json").mkdir()
  (root / "run-no-json" / "gray.npy").write_bytes(b"")
  (root / "keep.txt").write_text("keep me")
  (root / "folder").mkdir()
  (root / "targets.py").write_text(
    "def raises(out):\n  raise ValueError('boom')\n\ndef vector(out):\n  return out['q']\n\n"
    "def nan(out):\n  return out['q'][0] * float('nan')\n"
  )
  return root


def tree_digest(root: Path) -> dict:
  return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}


A, G, D = "{w}/agent", "{w}/gen", "{w}/data"
PPO, GEN = "configs/pong_ppo.yaml", "configs/generator_cpu.yaml"
# (command line with {w} for the world folder, what the one line must say)
CASES = [
  # train-agent: config values, from YAML and overrides
  ("train-agent --config {w}/missing.yaml --out {w}/o", "config file {w}/missing.yaml does not exist"),
  (f"train-agent --config {PPO} --out {{w}}/o lr=-1", "config field 'lr' must be a finite number > 0, got -1"),
  (f"train-agent --config {PPO} --out {{w}}/o lr=nan", "config field 'lr' must be a finite number > 0, got nan"),
  (f"train-agent --config {PPO} --out {{w}}/o gamma=2", "config field 'gamma' must be a finite number in (0, 1]"),
  (f"train-agent --config {PPO} --out {{w}}/o total_steps=0", "config field 'total_steps' must be an integer >= 1"),
  (f"train-agent --config {PPO} --out {{w}}/o checkpoint_every=0", "'checkpoint_every' must be an integer >= 1"),
  (f"train-agent --config {PPO} --out {{w}}/o num_minibatches=5", "'num_minibatches' (5) must divide the rollout"),
  (f"train-agent --config {PPO} --out {{w}}/o clip_coef=0", "config field 'clip_coef' must be a finite number > 0"),
  (f"train-agent --config {PPO} --out {{w}}/o lrr=1", "unknown config field 'lrr'"),
  (f"train-agent --config {PPO} --out {{w}}/o env_id=Pongg-v5", "unknown env id 'Pongg-v5'"),
  ("train-agent --config configs/seaquest_dqn.yaml --out {w}/o epsilon_end=1.5", "'epsilon_end' must be"),
  (f"train-agent --config {PPO} --out {{w}}/keep.txt", "{w}/keep.txt is a file"),
  # evaluate-agent
  ("evaluate-agent --agent {w}/missing", "no agent checkpoint at {w}/missing"),
  (f"evaluate-agent --agent {A} --epsilon -0.5", "--epsilon: must be a finite number in [0, 1], got '-0.5'"),
  (f"evaluate-agent --agent {A} --episodes 0", "--episodes: must be an integer >= 1"),
  (f"evaluate-agent --agent {A} --gif {{w}}/nowhere/a.gif", "the folder {w}/nowhere does not exist"),
  (f"evaluate-agent --agent {A} --json {{w}}/folder", "--json {w}/folder is a directory"),
  ("evaluate-agent --agent {w}/agent-bytes", "agent checkpoint {w}/agent-bytes"),
  ("evaluate-agent --agent {w}/agent-random", "does not match its checksum"),
  # saliency
  (f"saliency --agent {A} --out {{w}}/o --frames 0", "--frames: must be an integer >= 1"),
  (f"saliency --agent {A} --out {{w}}/o --method lime", "unknown saliency method 'lime'"),
  (f"saliency --agent {A} --out {{w}}/o --warmup -1", "--warmup: must be an integer >= 0"),
  # collect
  (f"collect --agent {A} --out {{w}}/o --frames 0", "--frames: must be an integer >= 1"),
  (f"collect --agent {A} --out {{w}}/o --num-envs 0", "--num-envs: must be an integer >= 1"),
  (f"collect --agent {A} --out {D}", "{w}/data already exists"),
  (f"collect --agent {A} --out {{w}}/o --env Seaquest-v5", "the agent has 6 actions but Seaquest-v5 has 18"),
  (f"collect --agent {A} --out {{w}}/o --seed -1", "--seed: must be an integer in [0, 2.14748e+09]"),
  # dataset info
  ("dataset info {w}/missing", "no dataset at {w}/missing"),
  (f"dataset info {D} --num 0", "--num: must be an integer >= 1"),
  (f"dataset info {D} --sheet {{w}}/folder", "--sheet {w}/folder is a directory"),
  ("dataset info {w}/data-changed", "gray.npy does not match its checksum"),
  # dataset merge
  (f"dataset merge {D} --out {{w}}/o", "give at least two datasets to merge"),
  (f"dataset merge {D} {{w}}/seaquest-data --out {{w}}/o", "collected by another agent"),
  (f"dataset merge {D} {D} --out {D}", "{w}/data already exists"),
  (f"dataset merge {D} {{w}}/data-changed --out {{w}}/o", "gray.npy does not match its checksum"),
  # train-generator
  (f"train-generator --config {GEN} --dataset {D} --agent {A} --out {{w}}/o batch_size=0", "'batch_size' must be"),
  (f"train-generator --config {GEN} --dataset {D} --agent {A} --out {{w}}/o batch_size=64", "larger than the dataset"),
  (f"train-generator --config {GEN} --dataset {D} --agent {A} --out {{w}}/o object_share=1.5", "'object_share'"),
  (f"train-generator --config {GEN} --dataset {D} --agent {A} --out {{w}}/o eta=-1", "config field 'eta'"),
  (f"train-generator --config {PPO} --dataset {D} --agent {A} --out {{w}}/o", "a ppo agent, not a generator"),
  (f"train-generator --config {GEN} --dataset {D} --agent {A} --out {{w}}/o init={{w}}/nowhere", "{w}/nowhere"),
  (f"train-generator --config {GEN} --dataset {D} --agent {A} --out {{w}}/o perception=raw", "'perception'"),
  (f"train-generator --config {GEN} --dataset {{w}}/seaquest-data --agent {A} --out {{w}}/o", "Seaquest-v5"),
  (f"train-generator --config {GEN} --dataset {{w}}/data-changed --agent {A} --out {{w}}/o", "match its checksum"),
  # goggles, fidelity, fit-prior
  (f"goggles --agent {A} --generator {{w}}/other-gen", "the generator was trained for another agent"),
  (f"goggles --agent {A} --generator {G} --episodes 0", "--episodes: must be an integer >= 1"),
  (f"fidelity --agent {A} --generator {G} --dataset {{w}}/seaquest-data", "Seaquest-v5"),
  (f"fidelity --agent {A} --generator {G} --dataset {D} --json {{w}}/folder", "--json {w}/folder is a directory"),
  (f"fidelity --agent {A} --generator {G} --dataset {D} --states 0", "--states: must be an integer >= 1"),
  (f"fidelity --agent {A} --generator {{w}}/gen-latent --dataset {D}", "latent_dim"),
  (f"fidelity --agent {A} --generator {{w}}/gen-random --dataset {D}", "gen-random does not match its checksum"),
  (f"fit-prior --generator {{w}}/missing --dataset {D}", "no generator checkpoint at {w}/missing"),
  (f"fit-prior --generator {G} --dataset {D} --samples 0", "--samples: must be an integer >= 1"),
  # probe
  (f"probe --agent {A} --generator {G} --out {{w}}/o --lr -1", "--lr: must be a finite number > 0"),
  (f"probe --agent {A} --generator {G} --out {{w}}/o --alpha nan", "--alpha: must be a finite number >= 0"),
  (f"probe --agent {A} --generator {G} --out {{w}}/o --patience -3", "--patience: must be an integer >= 0"),
  (f"probe --agent {A} --generator {G} --out {{w}}/o --diversity -1", "--diversity: must be a finite number >= 0"),
  (f"probe --agent {A} --generator {G} --out {{w}}/o --target T0", "unknown target 'T0'"),
  (f"probe --agent {A} --generator {G} --out {{w}}/o --target action:6", "action 6 is out of range"),
  (f"probe --agent {A} --generator {G} --out {{w}}/o --init data", "--init data needs --dataset"),
  (f"probe --agent {A} --generator {G} --out {{w}}/o --target targets:raises", "your function raised ValueError"),
  (f"probe --agent {A} --generator {G} --out {{w}}/o --target targets:vector", "one number per state"),
  (f"probe --agent {A} --generator {G} --out {{w}}/o --target targets:nan", "returned a non-finite value"),
  (f"probe --agent {A} --generator {G} --out {{w}}/o --init data --dataset {{w}}/seaquest-data", "Seaquest-v5"),
  (f"probe --agent {A} --generator {{w}}/missing --out {{w}}/o", "no generator checkpoint at {w}/missing"),
  # report
  ("report {w}/not-a-run --dataset {w}/data --out {w}/r.html", "{w}/not-a-run is not a probe run"),
  ("report {w}/run-no-json --dataset {w}/data --out {w}/r.html", "{w}/run-no-json is not a probe run"),
  ("report {w}/run --dataset {w}/data --out {w}/folder", "--out {w}/folder is a directory"),
  ("report {w}/run-missing --dataset {w}/data --out {w}/r.html", "lacks latent_Tminus/gray.npy; run the probe again"),
  ("report {w}/run-truncated --dataset {w}/data --out {w}/r.html", "latent_Tminus/colour.npy is truncated or damaged"),
  ("report {w}/run --dataset {w}/data --out {w}/r.html --show 0", "--show: must be an integer >= 1"),
  ("report {w}/run --dataset {w}/data --out {w}/r.html --rollouts -2", "--rollouts: must be an integer >= 0"),
  ("report {w}/run --dataset {w}/seaquest-data --out {w}/r.html --rollouts 0", "Seaquest-v5"),
  # demo: its arguments are checked before it collects anything
  ("demo --out {w}/o --reference-states -1", "--reference-states: must be an integer >= 1"),
  ("demo --out {w}/o --game breakout", "unknown demo game 'breakout'"),
  ("demo --out {w}/o --num 0", "--num: must be an integer >= 1"),
  (f"demo --out {{w}}/o --agent {A} --generator {{w}}/other-gen", "the generator was trained for another agent"),
]


@pytest.mark.parametrize("line, message", CASES, ids=[c[0].split(" --")[0] + f" #{i}" for i, c in enumerate(CASES)])
def test_refused_in_one_line_before_any_work(world, line, message, capsys, monkeypatch):
  monkeypatch.syspath_prepend(str(world))  # the user targets in targets.py
  before = tree_digest(world)
  t0 = time.perf_counter()
  code = main(line.format(w=world).split())
  seconds = time.perf_counter() - t0
  err = capsys.readouterr().err
  assert code == 2, err
  assert err.count("\n") == 1 and "Traceback" not in err, err
  assert message.format(w=world) in err, err
  assert seconds < 10, f"refused after {seconds:.1f} s"
  assert tree_digest(world) == before
  assert not (world / "o").exists() and not list(world.glob(".*tmp*"))


def test_the_catalogue_covers_every_command():
  from jaxprobe.commands import PIPELINE

  names = {" ".join(c.NAME) if isinstance(c.NAME, tuple) else c.NAME for c in PIPELINE}
  covered = {name for name in names for line, _ in CASES if line.startswith(name + " ")}
  assert covered == names and len(CASES) >= 40
