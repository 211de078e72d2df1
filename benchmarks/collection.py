"""Collection (env steps/s with agent inference): jaxprobe's envpool path vs gymnasium + ale-py (issue 8).

The loop of `jaxprobe collect` (jaxprobe/collection/recorder.py) without its recording: the agent
picks epsilon-greedy actions for a batch of games, the games step. Both sides call the same
agent function, jaxprobe's jitted `act` (a random-init Q network, epsilon 0.1), so only the
env path differs:
- jaxprobe: envpool through `jaxprobe.envs.make_atari` (the repo's preprocessing:
  frame skip 4 with max-pool, grayscale, 84x84 INTER_AREA, 4-frame stack, up to 30 no-ops);
- gymnasium 1.x + ale-py, as a user would build it: `ALE/<game>-v5` with frameskip 1, no
  sticky actions, the minimal action set, wrapped in `AtariPreprocessing` (frame skip 4,
  84x84 grayscale, 30 no-ops) and `FrameStackObservation(4)`, vectorised with
  `SyncVectorEnv` and `AsyncVectorEnv` (one process per game).
The games are played on, call after call, so resets happen as often as in collection.

Before timing, both env paths must show the agent the same frames: one game each, no
no-ops and no FIRE on reset, the same actions; the share of differing pixels must stay
under --tolerance (envpool grays before resizing as gymnasium does; a few sprite pixels
differ). Target: jaxprobe >= 3x the gymnasium loop. The script also times envpool alone (the same
games stepped with random actions, no agent) in the same rounds: the gymnasium loop's time over
that is the ratio's ceiling here, the most any change to jaxprobe's side short of a faster
emulator or more cores could give.

  .venv/bin/python benchmarks/collection.py [--num-envs 8] [--steps 200] [--peers sync,async] [--quick]
"""

from __future__ import annotations

import argparse
import functools

import common  # noqa: I001  (first: sets the XLA and OpenMP settings)
import jax
import numpy as np
import search_setup

from jaxprobe.agents.agent import act
from jaxprobe.envs import ATARI_PREPROCESSING, make_atari

EXTRA_VERSIONS = ("envpool", "gymnasium", "ale-py", "opencv-python-headless")
EPSILON = 0.1
TARGET = 3.0  # jaxprobe >= 3x the gymnasium loop


def gymnasium_env(env_id: str, num_envs: int, mode: str, noop_max: int = ATARI_PREPROCESSING["noop_max"]):
  """A gymnasium vector env with the preprocessing of jaxprobe.envs, built from ALE's own env."""
  import ale_py
  import gymnasium as gym
  from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation

  gym.register_envs(ale_py)
  p = ATARI_PREPROCESSING

  def make():
    env = gym.make(
      f"ALE/{env_id}",
      frameskip=1,
      repeat_action_probability=p["repeat_action_probability"],
      full_action_space=p["full_action_space"],
      max_num_frames_per_episode=p["max_episode_steps"] * p["frame_skip"],
    )
    env = AtariPreprocessing(
      env,
      noop_max=noop_max,
      frame_skip=p["frame_skip"],
      screen_size=p["img_height"],
      grayscale_obs=True,
      terminal_on_life_loss=False,
      scale_obs=False,
    )
    return FrameStackObservation(env, p["stack_num"])

  vector = {"sync": gym.vector.SyncVectorEnv, "async": gym.vector.AsyncVectorEnv}[mode]
  return vector([make] * num_envs)


def player(env, agent, steps: int, reset_seed: int | None = None):
  """`run()` plays `steps` agent steps in every game of `env` (gymnasium vector API), going on from the last call.

  envpool is seeded when made, gymnasium's vector envs by `reset_seed`.
  """
  policy = jax.jit(functools.partial(act, agent.spec))
  obs, _ = env.reset() if reset_seed is None else env.reset(seed=reset_seed)
  state = [obs, jax.random.key(0)]

  def run():
    obs, key = state
    for _ in range(steps):
      key, sub = jax.random.split(key)
      obs, *_ = env.step(np.asarray(policy(agent.params, obs, sub, EPSILON)))
    state[:] = [obs, key]

  return run


def env_only(env, num_envs: int, steps: int):
  """`run()` steps `env` `steps` times with random actions drawn beforehand: the env path alone."""
  env.reset()
  actions = np.random.default_rng(0).integers(0, env.action_space.n, (steps, num_envs), dtype=np.int32)

  def run():
    for a in actions:
      env.step(a)

  return run


def frame_agreement(agent, env_id: str, steps: int) -> float:
  """Share of pixels in which the two env paths' observations differ over `steps` identical actions."""
  ours = make_atari(env_id, num_envs=1, noop_max=1, use_fire_reset=False)  # noop_max 1: no no-ops
  theirs = gymnasium_env(env_id, 1, "sync", noop_max=0)
  policy = jax.jit(functools.partial(act, agent.spec))
  (a, _), (b, _) = ours.reset(), theirs.reset(seed=0)
  if a.shape != b.shape or a.dtype != b.dtype:
    raise SystemExit(f"observations differ in form: envpool {a.shape} {a.dtype}, gymnasium {b.shape} {b.dtype}")
  differing, key = [], jax.random.key(0)
  for _ in range(steps):
    differing.append(np.mean(a != b))
    key, sub = jax.random.split(key)
    actions = np.asarray(policy(agent.params, a, sub, EPSILON))
    (a, *_), (b, *_) = ours.step(actions), theirs.step(actions)
  ours.close()
  theirs.close()
  return float(np.max(differing))


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--env-id", default=search_setup.ENV_ID)
  parser.add_argument("--num-envs", type=int, default=8, help="games stepped at once (jaxprobe collect's default)")
  parser.add_argument("--steps", type=int, default=200, help="agent steps per timed call")
  parser.add_argument("--check-steps", type=int, default=50, help="steps of the frame agreement check")
  parser.add_argument("--tolerance", type=float, default=0.01, help="largest share of differing pixels")
  common.add_common_args(parser, rounds=3, peers=("sync", "async"))  # gymnasium's vectorisations
  args = parser.parse_args()
  if args.quick:
    args.num_envs, args.steps, args.peers, args.check_steps, args.rounds = 2, 10, ["sync"], 20, 1
  print(common.header(EXTRA_VERSIONS))

  agent = search_setup.make_agent(env_id=args.env_id)
  share = frame_agreement(agent, args.env_id, args.check_steps)
  print(
    f"check: envpool vs gymnasium frames, {args.check_steps} steps: at most {share:.2%} of pixels differ "
    f"(tolerance {args.tolerance:.0%})"
  )
  if not share <= args.tolerance:
    raise SystemExit("the two env paths show the agent different frames: timing them would compare different work")

  ours = "jaxprobe envpool"
  envs = {ours: make_atari(args.env_id, num_envs=args.num_envs)}
  for mode in args.peers:
    envs[f"gymnasium {mode}"] = gymnasium_env(args.env_id, args.num_envs, mode)
  variants = {name: player(env, agent, args.steps, None if name == ours else 0) for name, env in envs.items()}
  alone = make_atari(args.env_id, num_envs=args.num_envs, seed=1)
  variants["envpool alone"] = env_only(alone, args.num_envs, args.steps)
  times = common.time_rounds(variants, args.rounds, warmup=1)
  for env in [*envs.values(), alone]:
    env.close()
  rows = []
  for name in envs:
    if name != ours:
      row = common.Row(
        f"{args.env_id}, {args.steps} agent steps, jitted act",
        args.num_envs,
        f"{ours} + agent",
        times[ours],
        f"{name} + agent",
        times[name],
        args.num_envs * args.steps,
        "env steps",
      )
      rows += [
        row,
        common.ceiling(
          row,
          times["envpool alone"],
          "envpool alone, no agent",
          TARGET,
          "the same games with random actions: jaxprobe's env path with the agent free",
        ),
      ]
  common.finish(
    "collection", f"Collection with agent inference (target >= {TARGET:g}x gymnasium)", rows, args, EXTRA_VERSIONS
  )


if __name__ == "__main__":
  main()
