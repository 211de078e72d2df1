"""`jaxprobe probe`: search the generator's latent space (or pixels) for states of interest, and write the run.

    jaxprobe probe --agent AGENT --generator GEN --target T- --target T+ --num 4096 --steps 200 --out runs/probe

The run directory holds probe.json (agent, generator, config, a summary per target) and
one folder per target: gray.npy and colour.npy (the found states), latents.npy (z) or
pixel_logits.npy, run.json (energies, outputs, curve), best.png and energy.png.
The search itself is `search.probe` (docs/search.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path
from typing import Sequence

import jax
import numpy as np

from jaxprobe.agents.agent import Agent, fingerprint
from jaxprobe.agents.checkpoint import load_agent
from jaxprobe.collection.dataset import open_dataset
from jaxprobe.commands import flags
from jaxprobe.config import add_flags, from_flags, to_dict
from jaxprobe.evaluation.novelty import spread
from jaxprobe.files import prepare_out_dir, save_png, write_json
from jaxprobe.generator.spec import GeneratorBundle, load_generator
from jaxprobe.hosts import is_leader, together
from jaxprobe.report.images import grid, value_bars
from jaxprobe.search.modes import describe as describe_modes
from jaxprobe.search.spaces import ProbeConfig, ProbeResult, check_inputs, probe
from jaxprobe.search.targets import get_target

NAME = "probe"
WRITES = ("out",)  # held for the whole command (cli.main)
HOSTS = True  # runs on many processes (jaxprobe.hosts): the rows of each target spread over every device
HELP = "search the generator's latent space (or pixels) for states of interest"
DESCRIPTION = (
  "Minimise target(agent(G(z))) + alpha * -log p(u) (the generator's latent prior) for --num latents at "
  "once with Adam, from samples of the prior or from real states (--init); or, with "
  "--space pixel, the paper's baseline that optimises the agent's input directly. Targets: T+, T-, "
  "T+-, S+, S-, S+-, action:N, not-action:N, or module:function (your own energy of one state's "
  "outputs dict)."
)
SHOW = 16  # lowest-energy states drawn in best.png


def add_arguments(p: argparse.ArgumentParser) -> None:
  """The subcommand's flags: the search's from `ProbeConfig`, the rest here."""
  flags.agent(p)
  flags.generator(p, required=False, help="generator checkpoint (needed for --space latent)")
  p.add_argument("--target", action="append", help="target to minimise; repeat for several (default: T-)")
  add_flags(p, ProbeConfig)
  p.add_argument("--dataset", help="states of the agent's game, for --init data or data-nearest")
  flags.out(p, "output directory")
  flags.no_verify(p)
  flags.quiet(p)


def safe_name(target: str) -> str:
  """A folder name for a target: T+ -> Tplus, action:3 -> action_3."""
  return re.sub(r"[^A-Za-z0-9_]", lambda m: {"+": "plus", "-": "minus", ":": "_"}.get(m.group(), "_"), target)


def write_run(
  out: str | Path,
  agent: Agent,
  generator: GeneratorBundle | None,
  config: ProbeConfig,
  results: Sequence[ProbeResult],
  agent_path: str = "",
  generator_path: str = "",
  show: int = SHOW,
  dataset_path: str = "",
) -> Path:
  """Per target a folder of arrays, a JSON and two images; `probe.json` describes the run."""
  out = prepare_out_dir(out)
  head = agent.spec.action_head
  summary = []
  for r in results:
    folder = out / f"{config.space}_{safe_name(r.target)}"
    folder.mkdir(exist_ok=True)
    np.save(folder / "gray.npy", r.gray)
    np.save(folder / "colour.npy", r.colour)
    if config.space == "latent":
      mean, std = generator.latent_coordinates()
      np.save(folder / "latents.npy", mean + std * r.variables)  # z itself, for the decoder
    else:
      np.save(folder / "pixel_logits.npy", r.variables)
    order = np.argsort(r.energy_end)
    tiles, captions = [], []
    for i in order[:show]:
      big = np.kron(r.colour[i, ..., -3:], np.ones((2, 2, 1), np.uint8))
      tiles.append(np.concatenate([big, value_bars(r.outputs[head][i], big.shape[1], 36, int(r.greedy[i]))], axis=0))
      captions.append(f"#{i} E={r.energy_end[i]:.2f} a={r.greedy[i]}")
    save_png(folder / "best.png", grid(tiles, captions, cols=4))
    plot_energy(folder / "energy.png", r)
    record = dict(
      target=r.target,
      reads=r.reads,
      space=config.space,
      num=len(r.gray),
      steps=config.steps,
      energy_start_mean=float(r.energy_start.mean()),
      energy_end_mean=float(r.energy_end.mean()),
      energy_end_best=float(r.energy_end.min()),
      greedy_action_histogram=np.bincount(r.greedy, minlength=agent.spec.num_actions).tolist(),
      spread=spread(r.gray),
      seconds=round(r.seconds, 2),
      compile_s=round(r.compile_s, 2),
      state_steps_per_s=round(len(r.gray) * config.steps / r.seconds, 1),
      states_per_s=round(len(r.gray) / r.seconds, 2),
      best_first=order.tolist(),
      energy_start=r.energy_start.round(5).tolist(),
      energy_end=r.energy_end.round(5).tolist(),
      greedy_action=r.greedy.tolist(),
      outputs={k: np.asarray(v).round(5).tolist() for k, v in r.outputs.items()},
      curve=np.asarray(r.curve).round(5).tolist(),
      start_rows=None if r.start_rows is None else r.start_rows.tolist(),
      start_dataset=None if r.start_rows is None else str(Path(dataset_path).absolute()),
      modes=r.modes.summary(),
      mode_of_state=r.modes.labels.tolist(),
    )
    write_json(folder / "run.json", record, indent=None)
    summary.append(
      {
        k: record[k]
        for k in (
          "target",
          "reads",
          "energy_start_mean",
          "energy_end_mean",
          "greedy_action_histogram",
          "modes",
          "seconds",
          "compile_s",
          "state_steps_per_s",
          "states_per_s",
        )
      }
      | dict(folder=folder.name)
    )
  meta = dict(
    agent=dict(path=agent_path, fingerprint=fingerprint(agent.params), **agent.spec.to_json()),
    generator=None if generator is None else dict(path=generator_path, **dataclasses.asdict(generator.spec)),
    config=to_dict(config),
    devices=[str(d) for d in jax.devices()],
    targets=summary,
  )
  write_json(out / "probe.json", meta)
  return out


def plot_energy(path: Path, r: ProbeResult) -> None:
  """The mean energy over the rows against the optimisation step."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(4.5, 2.8), dpi=110)
  ax.plot(np.arange(1, len(r.curve) + 1), r.curve, color="tab:red")
  ax.set_xlabel("optimisation step")
  ax.set_ylabel("mean energy")
  ax.set_title(f"target {r.target}")
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def summary_table(results: Sequence[ProbeResult]) -> str:
  """One line per target: energies, times, throughput, spread and the greedy actions of the found states."""
  lines = [
    f"{'target':14s} {'energy before':>14s} {'energy after':>13s} {'search s':>9s} {'compile s':>9s} "
    f"{'states/s':>9s} {'latent-steps/s':>14s} {'spread':>8s} {'modes (% of states)':>20s}  greedy actions"
  ]
  for r in results:
    hist = np.bincount(r.greedy)
    steps = len(r.curve)
    lines.append(
      f"{r.target:14s} {r.energy_start.mean():14.3f} {r.energy_end.mean():13.3f} {r.seconds:9.2f} "
      f"{r.compile_s:9.2f} {len(r.gray) / r.seconds:9.1f} {len(r.gray) * steps / r.seconds:14.0f} "
      f"{spread(r.gray):8.1e} {describe_modes(r.modes.summary()):>20s}  "
      f"{' '.join(f'{a}:{n}' for a, n in enumerate(hist) if n)}"
    )
  lines.append("(spread: mean squared difference between two found states, in [0, 1] units; near 0: one state)")
  lines.append("(modes: groups of similar found states, their number chosen from the data; docs/search.md)")
  return "\n".join(lines)


def run(args: argparse.Namespace) -> None:
  """Runs the subcommand."""
  leader = is_leader()  # on many hosts, process 0 writes and reports; the others search their rows

  def inputs():  # every process's inputs checked before any work: one that refuses, all refuse
    config = from_flags(ProbeConfig, args)
    agent = load_agent(args.agent, verify=not args.no_verify)
    generator = load_generator(args.generator, verify=not args.no_verify) if args.generator else None
    dataset = open_dataset(args.dataset, verify=not args.no_verify) if args.dataset else None
    check_inputs(agent, generator, config, dataset)  # before the output folder exists: a refused run leaves none
    for name in args.target or ["T-"]:
      get_target(name, agent.spec.kind, agent.spec.num_actions, config.tau)
    if leader:
      prepare_out_dir(args.out)
    return config, agent, generator, dataset

  config, agent, generator, dataset = together(inputs)
  results = probe(agent, generator, args.target or ["T-"], config, progress=leader and not args.quiet, dataset=dataset)
  if not leader:
    return
  write_run(
    args.out, agent, generator, config, results, args.agent, args.generator or "", dataset_path=args.dataset or ""
  )
  print(summary_table(results))
  print(f"wrote {args.out}/probe.json and one folder per target (best.png, energy.png, run.json, arrays)")
