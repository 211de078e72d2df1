"""`jaxprobe demo`: the whole method on a bundled agent and generator, ending in one HTML report.

    jaxprobe demo                 # Pong; --game seaquest for Seaquest's

Collects a small set of the agent's real states (for novelty and retrieval),
probes every target in latent space and the paper's pixel-space baseline for
T- and T+, plays games for rollout evidence, and writes `report.html`: the
commands before it, in one run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from jaxprobe.agents.checkpoint import load_agent
from jaxprobe.collection.dataset import open_dataset
from jaxprobe.collection.recorder import collect
from jaxprobe.commands import flags
from jaxprobe.commands.probe import summary_table, write_run
from jaxprobe.config import COUNT
from jaxprobe.errors import UserError
from jaxprobe.evaluation.gauges import gauge_summary
from jaxprobe.evaluation.rollouts import rollout_evidence
from jaxprobe.files import prepare_out_dir, write_atomic, write_json
from jaxprobe.generator.spec import load_generator
from jaxprobe.report.html import build_report, load_run
from jaxprobe.search.spaces import ProbeConfig, check_inputs, probe

NAME = "demo"
WRITES = ("out",)  # held for the whole command (cli.main)
HELP = "the whole method on the bundled agent and generator, ending in a report"
DESCRIPTION = (
  "Collect reference states, probe every target (and the pixel baseline for T- and T+), play games for "
  "rollout evidence, and write OUT/report.html."
)

ASSETS = Path(__file__).resolve().parents[1] / "assets"
GAMES = {"pong": "Pong-v5", "seaquest": "Seaquest-v5"}
# Per agent kind: on actor-critic agents S+ and S- are the same energies as T+ and T- (docs/search.md).
LATENT_TARGETS = {"q": ("T+", "T-", "T+-", "S+", "S-", "S+-"), "actor_critic": ("T+", "T-", "T+-", "S+-")}
PIXEL_TARGETS = ("T-", "T+")


def add_arguments(p: argparse.ArgumentParser) -> None:
  """The subcommand's flags."""
  flags.from_signature(p, "--game", run_demo, "game", "pong or seaquest: which bundled assets")
  flags.agent(p, help="use this agent instead of the bundled one", required=False)
  flags.generator(p, required=False, help="use this generator instead of the bundled one")
  flags.out(p, "output directory (default: out/demo)", default="out/demo")
  flags.from_signature(p, "--num", run_demo, "num", "states per target")
  flags.from_signature(p, "--steps", run_demo, "steps", "optimisation steps")
  flags.from_signature(p, "--reference-states", run_demo, "reference_states", "real states collected for novelty")
  flags.from_signature(p, "--rollouts", run_demo, "rollouts", "games of rollout evidence (0: none)", type=COUNT)
  flags.no_verify(p)
  flags.quiet(p, "no progress bars")


def bundled(game: str) -> tuple[Path, Path]:
  """The bundled agent and generator of `game` (pong or seaquest)."""
  if game not in GAMES:
    raise UserError(f"unknown demo game '{game}'; known: {', '.join(GAMES)}")
  agent, generator = ASSETS / "agents" / game, ASSETS / "generators" / game
  if not agent.is_dir() or not generator.is_dir():
    raise UserError(
      f"the bundled {game} agent and generator are not in this version of jaxprobe yet "
      f"(looked in {agent} and {generator}); pass --agent and --generator"
    )
  return agent, generator


def run_demo(
  out: str | Path,
  game: str = "pong",
  agent_path: str | None = None,
  generator_path: str | None = None,
  num: int = 16,
  steps: int = 60,
  reference_states: int = 2000,
  rollouts: int = 6,
  progress: bool = True,
  verify: bool = True,
) -> dict:
  """Runs the demo into `out`; returns the summary also written to `out/demo.json`."""
  if agent_path is None or generator_path is None:
    default_agent, default_generator = bundled(game)
    agent_path, generator_path = agent_path or str(default_agent), generator_path or str(default_generator)
  t0 = time.perf_counter()
  agent, generator = load_agent(agent_path, verify=verify), load_generator(generator_path, verify=verify)
  config = ProbeConfig(num=num, steps=steps)
  for space in ("latent", "pixel"):  # every search checked before anything is collected or written
    check_inputs(agent, generator, dataclasses.replace(config, space=space))
  out = prepare_out_dir(out)
  data = out / "reference_states"
  if not data.exists():
    collect(agent, data, reference_states, epsilon=0.1, num_envs=8, progress=progress)
  dataset = open_dataset(data, verify=verify)
  timings = {"collect_s": time.perf_counter() - t0}
  runs, gauges = [], {}
  for space, targets in (("latent", LATENT_TARGETS[agent.spec.kind]), ("pixel", PIXEL_TARGETS)):
    t = time.perf_counter()
    cfg = dataclasses.replace(config, space=space)
    results = probe(agent, generator, targets, cfg, progress=progress)
    runs.append(write_run(out / f"probe_{space}", agent, generator, cfg, results, agent_path, generator_path))
    timings[f"probe_{space}_s"] = time.perf_counter() - t
    gauges.update({f"{space} {r.target}": g for r in results if (g := gauge_summary(r.colour, agent.spec.env_id))})
    print(summary_table(results))
  t = time.perf_counter()
  evidence = rollout_evidence(agent, rollouts, progress=progress) if rollouts > 0 else None
  timings["rollouts_s"] = time.perf_counter() - t
  report = write_atomic(out / "report.html", build_report([load_run(r) for r in runs], agent, dataset, evidence))
  timings["total_s"] = time.perf_counter() - t0
  summary = dict(
    report=str(report),
    game=game,
    timings_s={k: round(v, 1) for k, v in timings.items()},
    rollouts={k: v for k, v in evidence["summary"].items() if k not in ("scores", "oxygen_at_death")}
    if evidence
    else None,
  )
  if gauges:  # pixel readings of game gauges (Seaquest's oxygen) on the samples and on real states
    summary["gauges"] = dict(gauges, **{"real states": gauge_summary(dataset["colour"], agent.spec.env_id)})
  write_json(out / "demo.json", summary)
  return summary


def run(args: argparse.Namespace) -> None:
  """Runs the subcommand."""
  summary = run_demo(
    args.out,
    args.game,
    args.agent,
    args.generator,
    num=args.num,
    steps=args.steps,
    reference_states=args.reference_states,
    rollouts=args.rollouts,
    progress=not args.quiet,
    verify=not args.no_verify,
  )
  print(json.dumps(summary, indent=2))
  print(f"open {summary['report']}")
