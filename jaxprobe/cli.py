"""`jaxprobe` command line: each subcommand parses flags and calls one API function.

User errors (`UserError`) print one line and exit with code 2; anything else
is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import sys

from jaxprobe.errors import UserError


def _saliency(args: argparse.Namespace) -> None:
  from jaxprobe.agents.checkpoint import load_agent
  from jaxprobe.report.saliency_frames import explain_play
  agent = load_agent(args.agent, env_id=args.env)
  summary = explain_play(agent, args.out, method=args.method, frames=args.frames, env_id=args.env,
                         head=args.output, warmup=args.warmup, every=args.every,
                         epsilon=args.epsilon, seed=args.seed, progress=not args.quiet)
  print(f"wrote {len(summary['frames'])} {args.method} saliency frames, grid.png and "
        f"saliency.json to {args.out}")


def _train_agent(args: argparse.Namespace) -> None:
  from jaxprobe.agents.train import load_training_config, train_agent
  algorithm, config = load_training_config(args.config, args.overrides)
  agent = train_agent(algorithm, config, args.out, resume=args.resume, progress=not args.quiet)
  print(f"trained {algorithm} on {config.env_id}: agent in {args.out}/agent, curve in {args.out}/curve.png")
  del agent


def _evaluate_agent(args: argparse.Namespace) -> None:
  import json
  from jaxprobe.agents.checkpoint import load_agent
  from jaxprobe.agents.evaluate import evaluate
  agent = load_agent(args.agent, env_id=args.env)
  result = evaluate(agent, args.episodes, env_id=args.env, epsilon=args.epsilon, seed=args.seed,
                    gif=args.gif, progress=not args.quiet, policy=args.policy).summary()
  policy = args.policy if args.policy != "auto" else ("sample" if agent.spec.kind == "actor_critic" else "greedy")
  result.update(env_id=args.env or agent.spec.env_id, epsilon=args.epsilon, seed=args.seed, policy=policy)
  how = "actions sampled from the policy" if policy == "sample" else f"epsilon-greedy, epsilon {args.epsilon}"
  print(f"{result['env_id']}: mean {result['mean']:.1f}  std {result['std']:.1f}  min {result['min']:.0f}  "
        f"max {result['max']:.0f}  over {result['episodes']} games ({how})")
  if args.json:
    from pathlib import Path
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


def _collect(args: argparse.Namespace) -> None:
  from jaxprobe.agents.checkpoint import load_agent
  from jaxprobe.data.collect import collect
  agent = load_agent(args.agent, env_id=args.env)
  stats = collect(agent, args.out, args.frames, env_id=args.env, epsilon=args.epsilon, num_envs=args.num_envs,
                  seed=args.seed, resume=args.resume, progress=not args.quiet, command=" ".join(sys.argv))
  t = stats["times_s"]
  print(f"collected {stats['frames']} states into {args.out} in {stats['wall_s']:.1f} s "
        f"({stats['states_per_s']:.0f} states/s; env {t['env']:.1f} s, agent {t['agent']:.1f} s, "
        f"saliency {t['saliency']:.1f} s, writing {t['writing']:.1f} s)")


def _dataset_info(args: argparse.Namespace) -> None:
  import json
  from jaxprobe.data.dataset import open_dataset
  from jaxprobe.data.info import contact_sheet, summary
  from jaxprobe.report.images import save_png
  dataset = open_dataset(args.dataset, verify=not args.no_verify)
  info = summary(dataset)
  scores = info.pop("game_scores")
  print(json.dumps(info, indent=2))
  print(f"game scores: {', '.join(f'{s:.0f}' for s in scores) or 'no game finished'}")
  sheet = args.sheet or str(dataset.path / "contact_sheet.png")
  save_png(sheet, contact_sheet(dataset, args.num, args.seed))
  print(f"contact sheet: {sheet}")


def _train_generator(args: argparse.Namespace) -> None:
  from jaxprobe.agents.checkpoint import load_agent
  from jaxprobe.config import load_config
  from jaxprobe.data.dataset import open_dataset
  from jaxprobe.generator.train import GeneratorConfig, train
  config = load_config(GeneratorConfig, args.config, args.overrides)
  agent = load_agent(args.agent)
  dataset = open_dataset(args.dataset)
  train(config, dataset, agent, args.out, resume=args.resume, progress=not args.quiet)
  print(f"trained the {config.ablation} generator: {args.out}/generator, curves in {args.out}/curve.png, "
        f"samples in {args.out}/reconstructions.png")


def _goggles(args: argparse.Namespace) -> None:
  import json
  from jaxprobe.agents.checkpoint import load_agent
  from jaxprobe.generator.checkpoint import load_generator
  from jaxprobe.generator.goggles import goggles
  agent = load_agent(args.agent)
  result = goggles(agent, load_generator(args.generator), args.episodes, env_id=args.env, epsilon=args.epsilon,
                   seed=args.seed, progress=not args.quiet)
  for name in ("agent", "goggles"):
    r = result[name]
    print(f"{name:8s} mean {r['mean']:7.1f}  std {r['std']:6.1f}  min {r['min']:6.0f}  max {r['max']:6.0f}")
  if args.json:
    from pathlib import Path
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


def _fidelity(args: argparse.Namespace) -> None:
  import json
  from jaxprobe.agents.checkpoint import load_agent
  from jaxprobe.data.dataset import open_dataset
  from jaxprobe.generator.checkpoint import load_generator
  from jaxprobe.generator.goggles import fidelity
  f = fidelity(load_agent(args.agent), load_generator(args.generator), open_dataset(args.dataset, verify=False),
               num=args.states, seed=args.seed)
  print(f"on {f['states']} states: same greedy action {f['action_agreement']:.1%}, L_a {f['L_a']:.4g}, squared "
        f"error per colour value {f['mse_salient']:.2e} on salient pixels, {f['mse_rest']:.2e} elsewhere")
  if args.json:
    from pathlib import Path
    Path(args.json).write_text(json.dumps(f, indent=2) + "\n")


def _probe(args: argparse.Namespace) -> None:
  from jaxprobe.agents.checkpoint import load_agent
  from jaxprobe.generator.checkpoint import load_generator
  from jaxprobe.search.probe import ProbeConfig, probe, summary_table, write_run
  from jaxprobe.report.saliency_frames import prepare_out_dir
  config = ProbeConfig(space=args.space, num=args.num, steps=args.steps, lr=args.lr, alpha=args.alpha, tau=args.tau,
                       seed=args.seed, chunk=args.chunk, loop=args.loop, patience=args.patience)
  agent = load_agent(args.agent)
  generator = load_generator(args.generator) if args.generator else None
  prepare_out_dir(args.out)
  results = probe(agent, generator, args.target or ["T-"], config, progress=not args.quiet)
  write_run(args.out, agent, generator, config, results, args.agent, args.generator or "")
  print(summary_table(results))
  print(f"wrote {args.out}/probe.json and one folder per target (best.png, energy.png, run.json, arrays)")


def _report(args: argparse.Namespace) -> None:
  import json
  from jaxprobe.agents.checkpoint import load_agent
  from jaxprobe.data.dataset import open_dataset
  from jaxprobe.errors import UserError
  from jaxprobe.evaluate.rollouts import rollout_evidence
  from jaxprobe.generator.checkpoint import load_generator
  from jaxprobe.report.html import build_report, load_run, write_report
  from pathlib import Path
  out = Path(args.out)
  if not out.parent.is_dir():
    raise UserError(f"cannot write {out}: the folder {out.parent} does not exist")
  runs = [load_run(p) for p in args.runs]
  agent = load_agent(args.agent or runs[0]["agent"]["path"])
  dataset_path = args.dataset
  if dataset_path is None:
    gen = next((r["generator"] for r in runs if r.get("generator")), None)
    if gen is None:
      raise UserError("pixel-space runs alone do not name a dataset: pass --dataset")
    dataset_path = load_generator(gen["path"]).metadata.get("dataset")
  dataset = open_dataset(dataset_path, verify=False)
  evidence = rollout_evidence(agent, args.rollouts, progress=not args.quiet) if args.rollouts > 0 else None
  write_report(out, build_report(runs, agent, dataset, evidence, show=args.show))
  if evidence is not None:
    s = evidence["summary"]
    print(json.dumps({k: v for k, v in s.items() if k not in ("scores", "oxygen_at_death")}, indent=2))
  print(f"report: {out}")


def _demo(args: argparse.Namespace) -> None:
  import json
  from jaxprobe.report.demo import run_demo
  summary = run_demo(args.out, args.game, args.agent, args.generator, num=args.num, steps=args.steps,
                     reference_states=args.reference_states, rollouts=args.rollouts, progress=not args.quiet)
  print(json.dumps(summary, indent=2))
  print(f"open {summary['report']}")


def build_parser() -> argparse.ArgumentParser:
  from jaxprobe import saliency
  parser = argparse.ArgumentParser(
      prog="jaxprobe",
      description="Find and visualize the weaknesses of deep RL agents (Rupprecht et al., ICLR 2020) in JAX.")
  sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

  p = sub.add_parser("saliency", help="play an agent and draw what it looks at",
                     description="Play an agent in its game, compute a saliency map for the states it "
                                 "visits, and write one PNG per state (heat over the newest frame), "
                                 "grid.png with all of them, and saliency.json with the agent's outputs.")
  p.add_argument("--agent", required=True, help="agent checkpoint: a jaxprobe agent directory or a "
                                                "CleanRL .cleanrl_model file")
  p.add_argument("--env", default=None, help="envpool Atari id, e.g. Pong-v5 (default: the agent's own game)")
  p.add_argument("--method", default="guided", help=f"saliency method: {', '.join(saliency.METHODS)} "
                                                     "(default: guided)")
  p.add_argument("--frames", type=int, default=16, help="number of states to explain (default: 16)")
  p.add_argument("--out", required=True, help="output directory (created if missing)")
  p.add_argument("--output", default=None, help="which output to explain: q, logits or value "
                                                "(default: the greedy action's q or logit)")
  p.add_argument("--warmup", type=int, default=100, help="agent steps played before the first kept state (default: 100)")
  p.add_argument("--every", type=int, default=4, help="keep every N-th state after the warm-up (default: 4)")
  p.add_argument("--epsilon", type=float, default=0.0, help="probability of a random action while playing (default: 0)")
  p.add_argument("--seed", type=int, default=0, help="seed of the game and of random choices (default: 0)")
  p.add_argument("--quiet", action="store_true", help="no progress bar")
  p.set_defaults(run=_saliency)

  p = sub.add_parser("train-agent", help="train a DQN or PPO agent on an envpool Atari game",
                     description="Train an agent from a YAML config (its 'algorithm' field is dqn or ppo). "
                                 "The run directory gets config.yaml, resumable checkpoints (latest only), "
                                 "curve.csv, curve.png and agent/ (load it with --agent DIR/agent).")
  p.add_argument("--config", required=True, help="YAML config, e.g. configs/seaquest_ppo.yaml")
  p.add_argument("--out", required=True, help="run directory")
  p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
  p.add_argument("--quiet", action="store_true", help="no progress bar")
  p.add_argument("overrides", nargs="*", metavar="FIELD=VALUE", help="config overrides, e.g. total_steps=100000")
  p.set_defaults(run=_train_agent)

  p = sub.add_parser("evaluate-agent", help="score an agent over whole games of the real game",
                     description="Play N whole games (no episodic life, no reward clipping) and print the "
                                 "mean, std, min and max raw game score.")
  p.add_argument("--agent", required=True, help="agent checkpoint (directory or .cleanrl_model file)")
  p.add_argument("--env", default=None, help="envpool Atari id (default: the agent's own game)")
  p.add_argument("--episodes", type=int, default=10, help="number of games (default: 10)")
  p.add_argument("--epsilon", type=float, default=0.01, help="probability of a random action (default: 0.01)")
  p.add_argument("--policy", default="auto", choices=("auto", "greedy", "sample"),
                 help="greedy (epsilon-greedy), sample (from an actor-critic agent's policy), or auto: sample "
                      "for actor-critic agents, greedy for Q agents (default: auto)")
  p.add_argument("--seed", type=int, default=0, help="seed of the games and random actions (default: 0)")
  p.add_argument("--gif", default=None, help="write the first game as an animated GIF here")
  p.add_argument("--json", default=None, help="write the scores as JSON here")
  p.add_argument("--quiet", action="store_true", help="no progress bar")
  p.set_defaults(run=_evaluate_agent)

  p = sub.add_parser("collect", help="record the states an agent visits, with saliency masks",
                     description="The agent plays epsilon-greedily on its grayscale view; every state is "
                                 "recorded with its colour version, action, reward, episode, the agent's "
                                 "outputs and the blurred guided-backprop mask of its greedy action.")
  p.add_argument("--agent", required=True, help="agent checkpoint (directory or .cleanrl_model file)")
  p.add_argument("--env", default=None, help="envpool Atari id (default: the agent's own game)")
  p.add_argument("--frames", type=int, default=10000, help="number of states to record (default: 10000)")
  p.add_argument("--epsilon", type=float, default=0.1, help="probability of a random action (default: 0.1)")
  p.add_argument("--num-envs", type=int, default=8, help="games played side by side (default: 8)")
  p.add_argument("--seed", type=int, default=0, help="seed of games and random actions (default: 0)")
  p.add_argument("--out", required=True, help="dataset directory to create")
  p.add_argument("--resume", action="store_true", help="finish the partial collection OUT.partial")
  p.add_argument("--quiet", action="store_true", help="no progress bar")
  p.set_defaults(run=_collect)

  p = sub.add_parser("dataset", help="inspect datasets")
  dsub = p.add_subparsers(dest="dataset_command", required=True, metavar="ACTION")
  q = dsub.add_parser("info", help="print a dataset's manifest, action histogram and game scores, and "
                                   "write a contact sheet of random states")
  q.add_argument("dataset", help="dataset directory")
  q.add_argument("--sheet", default=None, help="contact sheet PNG path (default: DATASET/contact_sheet.png)")
  q.add_argument("--num", type=int, default=12, help="states on the contact sheet (default: 12)")
  q.add_argument("--seed", type=int, default=0, help="which random states (default: 0)")
  q.add_argument("--no-verify", action="store_true", help="skip the checksum check (faster on large datasets)")
  q.set_defaults(run=_dataset_info)

  p = sub.add_parser("train-generator", help="train the state generator on an agent's dataset",
                     description="Train the VAE-like generator with the saliency-weighted reconstruction, "
                                 "agent-perception and KL losses (the config's 'ablation' picks full, vae, "
                                 "saliency or perception). Resumable; writes curve.csv/png, "
                                 "reconstructions.png and generator/.")
  p.add_argument("--config", required=True, help="YAML config, e.g. configs/generator_cpu.yaml")
  p.add_argument("--dataset", required=True, help="dataset collected with --agent")
  p.add_argument("--agent", required=True, help="the agent the dataset was collected with")
  p.add_argument("--out", required=True, help="run directory")
  p.add_argument("--resume", action="store_true", help="continue the run in --out")
  p.add_argument("--quiet", action="store_true", help="no progress bar")
  p.add_argument("overrides", nargs="*", metavar="FIELD=VALUE", help="config overrides, e.g. ablation=vae")
  p.set_defaults(run=_train_generator)

  p = sub.add_parser("goggles", help="score the agent when it sees only the generator's reconstructions",
                     description="Play whole games twice on the same seeds: the agent on its own view, then "
                                 "on the grayscale of G(E(x)) of every colour observation (the paper's Table 1).")
  p.add_argument("--agent", required=True, help="agent checkpoint")
  p.add_argument("--generator", required=True, help="generator checkpoint (a run's generator/ folder)")
  p.add_argument("--env", default=None, help="envpool Atari id (default: the agent's own game)")
  p.add_argument("--episodes", type=int, default=10, help="games per condition (default: 10)")
  p.add_argument("--epsilon", type=float, default=0.01, help="probability of a random action (default: 0.01)")
  p.add_argument("--seed", type=int, default=0, help="seed of the games (default: 0)")
  p.add_argument("--json", default=None, help="write both score summaries as JSON here")
  p.add_argument("--quiet", action="store_true", help="no progress bar")
  p.set_defaults(run=_goggles)

  p = sub.add_parser("fidelity", help="how much of what the agent reads survives the generator, on real states",
                     description="On --states states of a dataset of the agent's game: how often the agent's greedy "
                                 "action on G(E(x)) equals its action on x, the distance of its outputs (L_a), and "
                                 "the reconstruction error on salient pixels and elsewhere. Finer than goggles' score.")
  p.add_argument("--agent", required=True, help="agent checkpoint")
  p.add_argument("--generator", required=True, help="generator checkpoint (a run's generator/ folder)")
  p.add_argument("--dataset", required=True, help="dataset of the agent's game; held-out states are the fair test")
  p.add_argument("--states", type=int, default=1000, help="states drawn from the dataset (default: 1000)")
  p.add_argument("--seed", type=int, default=0, help="which states (default: 0)")
  p.add_argument("--json", default=None, help="write the numbers as JSON here")
  p.set_defaults(run=_fidelity)

  p = sub.add_parser("probe", help="search the generator's latent space (or pixels) for states of interest",
                     description="Minimise target(agent(G(z))) + alpha/2 ||z||^2 for --num latents at once with "
                                 "Adam; or, with --space pixel, the paper's baseline that optimises the agent's "
                                 "input directly. Targets: T+, T-, T+-, S+, S-, S+-, action:N, not-action:N, "
                                 "or module:function (your own energy of one state's outputs dict).")
  p.add_argument("--agent", required=True, help="agent checkpoint")
  p.add_argument("--generator", default=None, help="generator checkpoint (needed for --space latent)")
  p.add_argument("--target", action="append", help="target to minimise; repeat for several (default: T-)")
  p.add_argument("--space", choices=("latent", "pixel"), default="latent", help="where to search (default: latent)")
  p.add_argument("--num", type=int, default=256, help="states per target (default: 256)")
  p.add_argument("--steps", type=int, default=200, help="Adam steps (default: 200)")
  p.add_argument("--lr", type=float, default=0.05, help="Adam learning rate (default: 0.05)")
  p.add_argument("--alpha", type=float, default=0.01, help="weight of the latent prior 0.5||z||^2 (default: 0.01)")
  p.add_argument("--tau", type=float, default=1.0, help="temperature of the targets' soft max/min (default: 1)")
  p.add_argument("--seed", type=int, default=0, help="seed of the starting points (default: 0)")
  p.add_argument("--chunk", type=int, default=0, help="states per compiled program (default 0: 4096 on "
                                                    "accelerators, 1024 on CPU)")
  p.add_argument("--loop", choices=("auto", "python", "scan"), default="auto",
                 help="drive the steps from Python or fuse them in one lax.scan (default: per backend)")
  p.add_argument("--patience", type=int, default=0, help="stop a state after N steps without improvement (0: off)")
  p.add_argument("--out", required=True, help="output directory")
  p.add_argument("--quiet", action="store_true", help="no progress bar")
  p.set_defaults(run=_probe)

  p = sub.add_parser("report", help="one self-contained HTML report of probe runs and rollout evidence",
                     description="For each target of the given probe runs: the best states with the agent's outputs, "
                                 "their nearest real states (by pixels and by target value), the novelty histogram, "
                                 "latent and pixel-space runs side by side; then how the agent's real games end.")
  p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="directories written by `jaxprobe probe`")
  p.add_argument("--out", required=True, help="the HTML file to write")
  p.add_argument("--agent", default=None, help="agent checkpoint (default: the one the runs name)")
  p.add_argument("--dataset", default=None, help="the agent's dataset (default: the generator's training dataset)")
  p.add_argument("--rollouts", type=int, default=10, help="games of rollout evidence (0: none; default: 10)")
  p.add_argument("--show", type=int, default=8, help="states shown per target and space (default: 8)")
  p.add_argument("--quiet", action="store_true", help="no progress bar")
  p.set_defaults(run=_report)

  p = sub.add_parser("demo", help="the whole method on the bundled agent and generator, ending in a report",
                     description="Collect reference states, probe every target (and the pixel baseline for T- and "
                                 "T+), play games for rollout evidence, and write OUT/report.html.")
  p.add_argument("--game", default="pong", help="pong or seaquest: which bundled assets (default: pong)")
  p.add_argument("--agent", default=None, help="use this agent instead of the bundled one")
  p.add_argument("--generator", default=None, help="use this generator instead of the bundled one")
  p.add_argument("--out", default="out/demo", help="output directory (default: out/demo)")
  p.add_argument("--num", type=int, default=16, help="states per target (default: 16)")
  p.add_argument("--steps", type=int, default=60, help="optimisation steps (default: 60)")
  p.add_argument("--reference-states", type=int, default=2000, help="real states collected for novelty (default: 2000)")
  p.add_argument("--rollouts", type=int, default=6, help="games of rollout evidence (default: 6)")
  p.add_argument("--quiet", action="store_true", help="no progress bars")
  p.set_defaults(run=_demo)
  return parser


def main(argv: list[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  try:
    args.run(args)
  except UserError as e:
    print(f"jaxprobe {args.command}: error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print(f"jaxprobe {args.command}: interrupted", file=sys.stderr)
    return 130
  return 0


if __name__ == "__main__":
  sys.exit(main())
