"""`jaxprobe demo`: the whole method on a bundled agent and generator, ending in one HTML report.

Collects a small set of the agent's real states (for novelty and retrieval),
probes every target in latent space and the paper's pixel-space baseline for
T- and T+, plays games for rollout evidence, and writes `report.html`.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from jaxprobe.agents.checkpoint import load_agent
from jaxprobe.data.collect import collect
from jaxprobe.data.dataset import open_dataset
from jaxprobe.errors import UserError
from jaxprobe.evaluate.gauges import gauge_summary
from jaxprobe.evaluate.rollouts import rollout_evidence
from jaxprobe.generator.checkpoint import load_generator
from jaxprobe.report.html import build_report, load_run, write_report
from jaxprobe.search.probe import ProbeConfig, probe, summary_table, write_run

ASSETS = Path(__file__).resolve().parents[1] / "assets"
GAMES = {"pong": "Pong-v5", "seaquest": "Seaquest-v5"}
LATENT_TARGETS = ("T+", "T-", "T+-", "S+", "S-", "S+-")
PIXEL_TARGETS = ("T-", "T+")


def bundled(game: str) -> tuple[Path, Path]:
  if game not in GAMES:
    raise UserError(f"unknown demo game '{game}'; known: {', '.join(GAMES)}")
  agent, generator = ASSETS / "agents" / game, ASSETS / "generators" / game
  if not agent.is_dir() or not generator.is_dir():
    raise UserError(f"the bundled {game} agent and generator are not in this version of jaxprobe yet "
                    f"(looked in {agent} and {generator}); pass --agent and --generator")
  return agent, generator


def run_demo(out: str | Path, game: str = "pong", agent_path: str | None = None, generator_path: str | None = None,
             num: int = 16, steps: int = 60, reference_states: int = 2000, rollouts: int = 6,
             progress: bool = True) -> dict:
  if agent_path is None or generator_path is None:
    default_agent, default_generator = bundled(game)
    agent_path, generator_path = agent_path or str(default_agent), generator_path or str(default_generator)
  out = Path(out)
  if out.exists() and not out.is_dir():
    raise UserError(f"output directory {out} is a file; choose a directory path")
  out.mkdir(parents=True, exist_ok=True)
  t0 = time.perf_counter()
  agent, generator = load_agent(agent_path), load_generator(generator_path)
  data = out / "reference_states"
  if not data.exists():
    collect(agent, data, reference_states, epsilon=0.1, num_envs=8, progress=progress)
  dataset = open_dataset(data, verify=False)
  timings = {"collect_s": time.perf_counter() - t0}
  config = ProbeConfig(num=num, steps=steps)
  runs, gauges = [], {}
  for space, targets in (("latent", LATENT_TARGETS), ("pixel", PIXEL_TARGETS)):
    t = time.perf_counter()
    cfg = dataclasses.replace(config, space=space)
    results = probe(agent, generator, targets, cfg, progress=progress)
    runs.append(write_run(out / f"probe_{space}", agent, generator, cfg, results, agent_path, generator_path))
    timings[f"probe_{space}_s"] = time.perf_counter() - t
    gauges.update({f"{space} {r.target}": g for r in results if (g := gauge_summary(r.colour, agent.spec.env_id))})
    print(summary_table(results))
  t = time.perf_counter()
  evidence = rollout_evidence(agent, rollouts, progress=progress)
  timings["rollouts_s"] = time.perf_counter() - t
  report = write_report(out / "report.html", build_report([load_run(r) for r in runs], agent, dataset, evidence))
  timings["total_s"] = time.perf_counter() - t0
  summary = dict(report=str(report), game=game, timings_s={k: round(v, 1) for k, v in timings.items()},
                 rollouts={k: v for k, v in evidence["summary"].items() if k not in ("scores", "oxygen_at_death")})
  if gauges:  # pixel readings of game gauges (Seaquest's oxygen) on the samples and on real states
    summary["gauges"] = dict(gauges, **{"real states": gauge_summary(dataset["colour"], agent.spec.env_id)})
  (out / "demo.json").write_text(json.dumps(summary, indent=2) + "\n")
  return summary
