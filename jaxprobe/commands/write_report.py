"""`jaxprobe report`: one self-contained HTML file of probe runs and rollout evidence.

jaxprobe report runs/probe runs/probe_pixel --dataset data/seaquest --out report.html
"""

from __future__ import annotations

import argparse
import json

from jaxprobe.agents.checkpoint import load_agent
from jaxprobe.collection.dataset import open_dataset
from jaxprobe.commands import flags
from jaxprobe.config import COUNT
from jaxprobe.errors import UserError
from jaxprobe.evaluation.rollouts import rollout_evidence
from jaxprobe.files import check_out_file, write_atomic
from jaxprobe.generator.spec import load_generator
from jaxprobe.report.html import build_report, load_run

NAME = "report"
WRITES = ("out",)  # held for the whole command (cli.main)
HELP = "one self-contained HTML report of probe runs and rollout evidence"
DESCRIPTION = (
  "For each target of the given probe runs: the best states with the agent's outputs, their nearest "
  "real states (by pixels and by target value), the novelty histogram, latent and pixel-space runs side "
  "by side; then how the agent's real games end."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
  """The subcommand's flags."""
  p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="directories written by `jaxprobe probe`")
  flags.out(p, "the HTML file to write")
  flags.agent(p, help="agent checkpoint (default: the one the runs name)", required=False)
  p.add_argument("--dataset", default=None, help="the agent's dataset (default: the generator's training dataset)")
  p.add_argument("--rollouts", type=COUNT, default=10, help="games of rollout evidence (0: none; default: 10)")
  flags.from_signature(p, "--show", build_report, "show", "states shown per target and space")
  flags.no_verify(p)
  flags.quiet(p)


def run(args: argparse.Namespace) -> None:
  """Runs the subcommand."""
  out = check_out_file(args.out, "--out")
  runs = [load_run(p) for p in args.runs]
  agent = load_agent(args.agent or runs[0]["agent"]["path"], verify=not args.no_verify)
  dataset_path = args.dataset
  if dataset_path is None:
    gen = next((r["generator"] for r in runs if r.get("generator")), None)
    if gen is None:
      raise UserError("pixel-space runs alone do not name a dataset: pass --dataset")
    dataset_path = load_generator(gen["path"], verify=not args.no_verify).metadata.get("dataset")
  dataset = open_dataset(dataset_path, verify=not args.no_verify)
  evidence = rollout_evidence(agent, args.rollouts, progress=not args.quiet) if args.rollouts > 0 else None
  write_atomic(out, build_report(runs, agent, dataset, evidence, show=args.show))
  if evidence is not None:
    s = evidence["summary"]
    print(json.dumps({k: v for k, v in s.items() if k not in ("scores", "oxygen_at_death")}, indent=2))
  print(f"report: {out}")
