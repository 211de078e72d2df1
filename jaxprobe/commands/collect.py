"""`jaxprobe collect`: record the states an agent visits, with its outputs and saliency masks.

    jaxprobe collect --agent AGENT --frames 10000 --epsilon 0.1 --num-envs 8 --out data/seaquest

The recording loop is `collection.recorder.collect`; the dataset format is
`collection.dataset` (docs/collection.md).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import jax

from jaxprobe.agents.checkpoint import load_agent
from jaxprobe.collection import dataset as ds
from jaxprobe.collection.recorder import collect
from jaxprobe.commands import flags
from jaxprobe.config import POSITIVE_INT
from jaxprobe.errors import UserError
from jaxprobe.hosts import is_leader, together

NAME = "collect"
WRITES = ("out",)  # held for the whole command (cli.main)
HOSTS = True  # runs on many processes (jaxprobe.hosts): each collects its share, process 0 merges
PART_SEED_STRIDE = 1_000_000  # process p plays with seed + p * this: games of its own
HELP = "record the states an agent visits, with saliency masks"
DESCRIPTION = (
  "The agent plays epsilon-greedily on its grayscale view; every state is recorded with its colour "
  "version, action, reward, episode, the agent's outputs and the blurred guided-backprop mask of its "
  "greedy action."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
  """The subcommand's flags."""
  flags.agent(p)
  flags.env(p)
  p.add_argument("--frames", type=POSITIVE_INT, default=10000, help="number of states to record (default: 10000)")
  flags.epsilon(p, collect)
  flags.from_signature(p, "--num-envs", collect, "num_envs", "games played side by side")
  flags.seed(p, "seed of games and random actions", collect)
  flags.out(p, "dataset directory to create")
  flags.resume(p, "finish the partial collection OUT.partial")
  flags.no_verify(p)
  flags.quiet(p)


def parts_path(out: str | Path) -> Path:
  """Where the processes of a many-host collection into `out` keep their parts: `OUT.parts/`."""
  out = Path(out)
  return out.with_name(out.name + ".parts")


def record(args: argparse.Namespace, agent, out: str | Path, frames: int, seed: int, resume: bool) -> dict:
  """`frames` states into `out` with `seed`, the flags' other settings; progress shown by process 0 alone."""
  return collect(
    agent,
    out,
    frames,
    env_id=args.env,
    epsilon=args.epsilon,
    num_envs=args.num_envs,
    seed=seed,
    resume=resume,
    progress=is_leader() and not args.quiet,
    command=" ".join(sys.argv),
  )


def collect_on_hosts(args: argparse.Namespace) -> None:
  """Each process collects its share of `--frames` with its own seed into `OUT.parts/part-P`;
  process 0 then merges the parts into one dataset at OUT (docs/hosts.md)."""
  processes, me, leader = jax.process_count(), jax.process_index(), is_leader()
  parts, out = parts_path(args.out), Path(args.out)

  def inputs():
    if out.exists():
      raise UserError(f"{out} already exists; choose another --out (nothing was overwritten)")
    if args.frames < processes:
      raise UserError(f"--frames {args.frames} is fewer than the {processes} processes; collect more")
    return load_agent(args.agent, env_id=args.env, verify=not args.no_verify)

  agent = together(inputs)
  share = args.frames // processes + (me < args.frames % processes)
  mine = parts / f"part-{me}"
  if not (args.resume and mine.is_dir()):  # a part finished before a stop is kept as it is
    record(args, agent, mine, share, args.seed + PART_SEED_STRIDE * me, args.resume and ds.partial_path(mine).is_dir())
  together(lambda: None)  # every part finished
  if not leader:
    return
  datasets = [ds.open_dataset(parts / f"part-{p}", verify=False) for p in range(processes)]
  ds.merge(
    datasets,
    out,
    seed=args.seed,
    frames=args.frames,
    processes=processes,
    parts=[dict(process=p, seed=d.manifest["seed"], frames=len(d)) for p, d in enumerate(datasets)],
  )
  shutil.rmtree(parts)
  print(f"collected {args.frames} states into {out} on {processes} processes (each its own share and seed)")


def run(args: argparse.Namespace) -> None:
  """Runs the subcommand."""
  if jax.process_count() > 1:
    collect_on_hosts(args)
    return
  agent = load_agent(args.agent, env_id=args.env, verify=not args.no_verify)
  stats = record(args, agent, args.out, args.frames, args.seed, args.resume)
  t = stats["times_s"]
  print(
    f"collected {stats['frames']} states into {args.out} in {stats['wall_s']:.1f} s "
    f"({stats['states_per_s']:.0f} states/s; env {t['env']:.1f} s, agent {t['agent']:.1f} s, "
    f"saliency {t['saliency']:.1f} s, writing {t['writing']:.1f} s)"
  )
