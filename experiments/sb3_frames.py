"""What an agent loses to the other library's Atari frames (issue 26): the same weights played in
Stable-Baselines3's own Atari wrappers (gymnasium + ale-py `NoFrameskip-v4`, `AtariWrapper`,
4 stacked frames) and by jaxprobe on envpool, both greedy with the same epsilon.

    python experiments/sb3_frames.py --agent jaxprobe/assets/agents/pong --episodes 10 \
      --out experiments/results/sb3_frames/pong.json

`--agent` is an SB3 zip, a game (`--agent Seaquest --train-sb3 200000`: an SB3 PPO agent is
trained first, with RL Zoo's Atari settings), or a jaxprobe actor-critic agent, written out as an SB3
PPO model (the inverse of `jaxprobe.agents.sb3`'s mapping, checked here on real frames: both
libraries' logits on the same observations agree to 1e-4). Needs the test extra (SB3, torch)
and ale-py (the bench extra). The SB3 side plays the real game for scoring: its episodes end at
game over (`terminal_on_life_loss=False`), scores unclipped.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def export_to_sb3(agent, path: Path):
  """Writes jaxprobe actor-critic `agent` as an SB3 PPO CnnPolicy model at `path`; returns the model."""
  import gymnasium as gym
  import torch
  from stable_baselines3 import PPO

  class Spaces(gym.Env):
    observation_space = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    action_space = gym.spaces.Discrete(agent.spec.num_actions)

  p = agent.params["params"]
  state = {}
  for i, theirs in enumerate(("cnn.0", "cnn.2", "cnn.4")):
    state[f"features_extractor.{theirs}.weight"] = np.asarray(p[f"Conv_{i}"]["kernel"]).transpose(3, 2, 0, 1)
    state[f"features_extractor.{theirs}.bias"] = np.asarray(p[f"Conv_{i}"]["bias"])
  dense = np.asarray(p["Dense_0"]["kernel"]).T.reshape(512, 7, 7, 64).transpose(0, 3, 1, 2).reshape(512, -1)
  state["features_extractor.linear.0.weight"], state["features_extractor.linear.0.bias"] = dense, p["Dense_0"]["bias"]
  for ours, theirs in (("policy", "action_net"), ("value", "value_net")):
    state[f"{theirs}.weight"], state[f"{theirs}.bias"] = np.asarray(p[ours]["kernel"]).T, p[ours]["bias"]
  for tower in ("pi_features_extractor", "vf_features_extractor"):
    state |= {k.replace("features_extractor", tower, 1): v for k, v in state.items() if k.startswith("features_")}
  model = PPO("CnnPolicy", Spaces(), device="cpu", seed=0)
  model.policy.load_state_dict({k: torch.as_tensor(np.asarray(v, np.float32)) for k, v in state.items()})
  model.save(path)
  return model


def train_sb3(env_id: str, steps: int, seed: int, path: Path):
  """An SB3 PPO CnnPolicy trained for `steps` agent steps on `env_id` (RL Zoo's Atari settings:
  8 envs, 128 steps, 4 epochs, batch 256, lr 2.5e-4, clip 0.1, entropy 0.01), saved at `path`."""
  import ale_py
  import gymnasium as gym
  from stable_baselines3 import PPO
  from stable_baselines3.common.env_util import make_atari_env
  from stable_baselines3.common.vec_env import VecFrameStack

  gym.register_envs(ale_py)
  env = VecFrameStack(make_atari_env(env_id, n_envs=8, seed=seed), n_stack=4)
  model = PPO(
    "CnnPolicy",
    env,
    n_steps=128,
    n_epochs=4,
    batch_size=256,
    learning_rate=2.5e-4,
    clip_range=0.1,
    ent_coef=0.01,
    vf_coef=0.5,
    seed=seed,
    device="cpu",
  )
  model.learn(total_timesteps=steps)
  model.save(path)
  env.close()
  return model


def play_in_sb3(model, env_id: str, episodes: int, epsilon: float, seed: int) -> list[float]:
  """Scores of `episodes` whole games in SB3's Atari wrappers, greedy with probability 1 - epsilon."""
  import ale_py
  import gymnasium as gym
  import torch
  from stable_baselines3.common.env_util import make_atari_env
  from stable_baselines3.common.vec_env import VecFrameStack, VecTransposeImage

  gym.register_envs(ale_py)
  env = VecTransposeImage(
    VecFrameStack(
      make_atari_env(env_id, n_envs=1, seed=seed, wrapper_kwargs=dict(terminal_on_life_loss=False)), n_stack=4
    )
  )
  rng, scores, obs = np.random.default_rng(seed), [], env.reset()
  while len(scores) < episodes:
    with torch.no_grad():
      action = model.policy.get_distribution(torch.as_tensor(obs)).distribution.logits.argmax(-1).numpy()
    if rng.random() < epsilon:
      action = np.array([rng.integers(env.action_space.n)])
    obs, _, _, infos = env.step(action)
    if "episode" in infos[0]:  # the Monitor's record of a finished game: its real score
      scores.append(float(infos[0]["episode"]["r"]))
  env.close()
  return scores


def main() -> None:
  """Plays both, prints the two mean scores, writes --out."""
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--agent", required=True, help="an SB3 zip or a jaxprobe actor-critic agent; with --train-sb3: a game")
  p.add_argument("--train-sb3", type=int, default=0, metavar="STEPS", help="first train an SB3 PPO agent on --agent")
  p.add_argument("--episodes", type=int, default=10)
  p.add_argument("--epsilon", type=float, default=0.01)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--out", default=None)
  args = p.parse_args()

  import torch
  from stable_baselines3 import PPO

  from jaxprobe.agents import load_agent
  from jaxprobe.agents.play import evaluate
  from jaxprobe.files import write_json

  if args.train_sb3:  # --agent names the game; the trained model goes to a temporary folder
    trained = Path(tempfile.mkdtemp()) / f"ppo-{args.agent}NoFrameskip-v4.zip"
    t = time.perf_counter()
    train_sb3(f"{args.agent}NoFrameskip-v4", args.train_sb3, args.seed, trained)
    print(f"trained SB3 PPO for {args.train_sb3} steps in {time.perf_counter() - t:.0f} s: {trained}")
    args.agent = str(trained)
  agent = load_agent(args.agent)
  if args.agent.endswith(".zip"):
    zip_path, model = Path(args.agent), PPO.load(args.agent, device="cpu")
  else:  # written to a temporary folder: a 7 MB model is no result to keep
    zip_path = Path(tempfile.mkdtemp()) / f"{Path(args.agent).name}-{agent.spec.env_id}.zip"
    model = export_to_sb3(agent, zip_path)
  imported = load_agent(zip_path, env_id=agent.spec.env_id)
  frames = np.random.default_rng(0).integers(0, 256, (8, 4, 84, 84), dtype=np.uint8)
  with torch.no_grad():
    theirs = model.policy.get_distribution(torch.as_tensor(frames)).distribution.logits.numpy()
  ours = np.asarray(imported.spec.apply(imported.params, frames)["logits"])
  gap = float(np.abs(ours - np.log(np.exp(ours).sum(-1, keepdims=True)) - theirs).max())
  sb3_id = agent.spec.env_id.replace("-v5", "NoFrameskip-v4")
  t0 = time.perf_counter()
  sb3_scores = play_in_sb3(model, sb3_id, args.episodes, args.epsilon, args.seed)
  t1 = time.perf_counter()
  ours_eval = evaluate(imported, args.episodes, epsilon=args.epsilon, seed=args.seed, policy="greedy", progress=False)
  t2 = time.perf_counter()
  result = dict(
    agent=args.agent,
    env=dict(sb3=sb3_id, jaxprobe=agent.spec.env_id),
    episodes=args.episodes,
    trained_sb3_steps=args.train_sb3,
    epsilon=args.epsilon,
    largest_log_prob_gap=gap,
    sb3=dict(
      episodes=len(sb3_scores),
      mean=float(np.mean(sb3_scores)),
      std=float(np.std(sb3_scores)),
      scores=sb3_scores,
      wall_s=t1 - t0,
    ),
    jaxprobe=dict(ours_eval.summary(), scores=ours_eval.scores.tolist(), wall_s=t2 - t1),
  )
  print(json.dumps({k: v for k, v in result.items() if k != "agent"}, indent=1))
  if args.out:
    write_json(args.out, result)


if __name__ == "__main__":
  main()
