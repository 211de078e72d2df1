"""Agent trainers: replay exactness, GAE, losses that go down, both PPO loops, resume, bad configs."""

import dataclasses
import hashlib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprobe.agents import dqn, ppo
from jaxprobe.agents.checkpoint import load_agent
from jaxprobe.agents.replay import FrameReplay
from jaxprobe.cli import main
from jaxprobe.commands.train_agent import train_agent
from jaxprobe.envs import make_atari
from jaxprobe.runs import RunDir


def test_replay_rebuilds_exactly_the_stacks_envpool_gave():
  # Breakout with episodic life: random play hits life losses and game overs within a few hundred steps.
  env = make_atari("Breakout-v5", num_envs=2, seed=0, episodic_life=True)
  replay = FrameReplay(capacity=2 * 150, num_envs=2)  # wraps around twice
  obs, _ = env.reset()
  seen, valid = [], np.ones(2, bool)
  rng = np.random.default_rng(0)
  game_overs = 0
  for _ in range(400):
    actions = rng.integers(0, 4, 2)
    next_obs, reward, term, trunc, info = env.step(actions)
    replay.add(obs, actions, reward, term | trunc, valid)
    seen.append(obs)
    game_overs += int((term & (info["lives"] == 0)).sum())
    obs, valid = next_obs, ~(term | trunc)
  assert game_overs >= 1
  oldest = (replay.pos - replay.size) % replay.length
  ages = np.arange(3, replay.size)
  slots = (oldest + ages) % replay.length
  for e in range(2):
    got = replay.stacks(np.full(len(slots), e), slots)
    want = np.stack([seen[len(seen) - replay.size + a][e] for a in ages])
    np.testing.assert_array_equal(got, want)


def test_n_step_returns_against_brute_force():
  replay = FrameReplay(capacity=64, num_envs=1)
  rng = np.random.default_rng(1)
  rewards = rng.normal(size=40).astype(np.float32)
  dones = rng.random(40) < 0.15
  valid = np.concatenate([[True], ~dones[:-1]])
  for t in range(40):
    frame = np.full((1, 4, 84, 84), t, np.uint8)
    replay.add(frame, [t % 3], [rewards[t]], [dones[t]], [valid[t]])
  batch = replay.sample(np.random.default_rng(2), 200, n_step=3, gamma=0.9)
  for i in range(200):
    t = int(batch.obs[i, -1, 0, 0])
    assert valid[t]
    want_return, discount = 0.0, 1.0
    for k in range(3):
      want_return += discount * rewards[t + k]
      discount *= 0.9
      if dones[t + k]:
        discount = 0.0
        break
    assert batch.returns[i] == pytest.approx(want_return, abs=1e-5)
    assert batch.discounts[i] == pytest.approx(discount, abs=1e-6)
    assert int(batch.next_obs[i, -1, 0, 0]) == t + 3


def test_gae_against_numpy():
  rng = np.random.default_rng(0)
  T, N = 7, 3
  rewards, values = rng.normal(size=(T, N)), rng.normal(size=(T, N))
  dones = rng.random((T, N)) < 0.3
  last_value, last_done = rng.normal(size=N), rng.random(N) < 0.5
  adv, ret = ppo.gae(
    jnp.asarray(rewards),
    jnp.asarray(values),
    jnp.asarray(dones),
    jnp.asarray(last_value),
    jnp.asarray(last_done),
    gamma=0.9,
    lam=0.8,
  )
  want = np.zeros((T, N))
  running = np.zeros(N)
  for t in reversed(range(T)):
    next_value = last_value if t == T - 1 else values[t + 1]
    nonterminal = 1.0 - (last_done if t == T - 1 else dones[t + 1])
    delta = rewards[t] + 0.9 * next_value * nonterminal - values[t]
    running = delta + 0.9 * 0.8 * nonterminal * running
    want[t] = running
  np.testing.assert_allclose(adv, want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(ret, want + values, rtol=1e-5, atol=1e-6)


def fixed_ppo_batch(n=32):
  rng = np.random.default_rng(0)
  return ppo.Batch(
    rng.integers(0, 256, (n, 4, 84, 84), dtype=np.uint8),
    rng.integers(0, 6, n).astype(np.int32),
    np.full(n, np.log(1 / 6), np.float32),
    rng.normal(size=n).astype(np.float32),
    rng.normal(size=n).astype(np.float32),
  )


def test_ppo_loss_goes_down_on_a_fixed_batch_and_both_loops_agree():
  config = ppo.PPOConfig(num_minibatches=2, update_epochs=3, lr=1e-3, anneal_lr=False, conv_impl="xla")
  spec = ppo.agent_spec(config, 6)
  optimizer = ppo.make_optimizer(config, 10)
  state = ppo.init_state(spec, config, optimizer)
  batch = fixed_ppo_batch()
  loss = lambda s: float(ppo.ppo_loss(s.params, spec, config, batch)[0])
  results = {}
  for loop in ("python", "scan"):
    update = ppo.make_update(spec, dataclasses.replace(config, loop=loop), optimizer)
    s = state
    for _ in range(3):
      s, _ = update(s, batch)
    results[loop] = s
  assert loss(results["python"]) < 0.8 * loss(state)
  jax.tree_util.tree_map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5),
    results["python"].params,
    results["scan"].params,
  )


def test_dqn_loss_goes_down_on_a_fixed_batch():
  config = dqn.DQNConfig(lr=5e-4, conv_impl="xla")
  spec = dqn.agent_spec(config, 6)
  optimizer = dqn.make_optimizer(config)
  state = dqn.init_state(spec, config, optimizer)
  rng = np.random.default_rng(0)
  obs = rng.integers(0, 256, (32, 4, 84, 84), dtype=np.uint8)
  batch = dqn.Transitions(
    obs,
    rng.integers(0, 6, 32).astype(np.int32),
    rng.normal(size=32).astype(np.float32),
    obs[::-1],
    np.full(32, 0.99, np.float32),
  )
  update = dqn.make_update(spec, optimizer)
  before = float(dqn.double_dqn_loss(state.params, state.target_params, spec, batch)[0])
  for _ in range(20):
    state, _ = update(state, batch)
  after = float(dqn.double_dqn_loss(state.params, state.target_params, spec, batch)[0])
  assert after < 0.5 * before


def files_digest(folder: Path) -> str:
  h = hashlib.sha256()
  for f in sorted(folder.rglob("*")):
    if f.is_file():
      h.update(str(f.relative_to(folder)).encode() + f.read_bytes())
  return h.hexdigest()


@pytest.mark.parametrize(
  "algorithm, config",
  [
    (
      "ppo",
      ppo.PPOConfig(
        env_id="Pong-v5",
        total_steps=512,
        num_envs=4,
        num_steps=64,
        num_minibatches=2,
        update_epochs=2,
        checkpoint_every=256,
        log_every=256,
      ),
    ),
    (
      "dqn",
      dqn.DQNConfig(
        env_id="Breakout-v5",
        total_steps=600,
        num_envs=4,
        buffer_size=800,
        learning_starts=200,
        target_update_every=200,
        epsilon_decay_steps=400,
        checkpoint_every=300,
        log_every=100,
      ),
    ),
  ],
)
def test_tiny_run_then_resume_continues_from_the_saved_step(tmp_path, algorithm, config):
  module = ppo if algorithm == "ppo" else dqn
  out = tmp_path / "run"
  train_agent(algorithm, config, out, progress=False)
  saved = load_agent(out / "agent")
  assert saved.metadata["steps"] == config.total_steps
  assert (out / "curve.png").exists() and (out / "curve.csv").read_text().count("\n") >= 2
  # The checkpoint holds exactly the params of the saved agent, and a resume starts from its step.
  run = RunDir(out, algorithm, config, resume=True)
  spec = module.agent_spec(config, saved.spec.num_actions)
  template = module.init_state(
    spec, config, module.make_optimizer(config, 1) if algorithm == "ppo" else module.make_optimizer(config)
  )
  restored, meta = run.restore(template)
  run.close()
  assert int(restored.step) == config.total_steps == meta["step"]
  jax.tree_util.tree_map(np.testing.assert_array_equal, jax.device_get(restored.params), saved.params)
  longer = dataclasses.replace(config, total_steps=2 * config.total_steps)
  train_agent(algorithm, longer, out, resume=True, progress=False)
  assert load_agent(out / "agent").metadata["steps"] == longer.total_steps
  # Killed after logging past its last checkpoint: a resume drops the rows logged after the step it
  # restores, so the curve has each step once.
  curve = out / "curve.csv"
  last = curve.read_text().splitlines()[-1].split(",")
  with open(curve, "a") as f:
    f.write(",".join([str(longer.total_steps + 50), *last[1:]]) + "\n")
  even_longer = dataclasses.replace(config, total_steps=3 * config.total_steps)
  train_agent(algorithm, even_longer, out, resume=True, progress=False)
  steps = [int(line.split(",")[0]) for line in curve.read_text().splitlines()[1:]]
  assert steps == sorted(set(steps)) and steps[-1] == even_longer.total_steps
  assert longer.total_steps + 50 not in steps


def write_config(path, text):
  path.write_text(text)
  return str(path)


def test_train_agent_bad_inputs_leave_runs_untouched(tmp_path, capsys):
  good = write_config(
    tmp_path / "good.yaml",
    "algorithm: ppo\nenv_id: Pong-v5\ntotal_steps: 256\nnum_envs: 2\n"
    "num_steps: 64\nnum_minibatches: 2\nupdate_epochs: 1\n"
    "checkpoint_every: 128\nlog_every: 128\n",
  )
  out = tmp_path / "run"
  assert main(["train-agent", "--config", good, "--out", str(out), "--quiet"]) == 0
  before = files_digest(out)
  cases = [
    (
      ["--config", write_config(tmp_path / "a.yaml", "algorithm: a3c\n"), "--out", str(tmp_path / "x")],
      "'algorithm' must be one of ppo, dqn, got 'a3c'",
    ),
    (
      [
        "--config",
        write_config(tmp_path / "b.yaml", "algorithm: ppo\nlearning_rate: 0.1\n"),
        "--out",
        str(tmp_path / "x"),
      ],
      "unknown config field 'learning_rate'",
    ),
    (
      [
        "--config",
        write_config(tmp_path / "c.yaml", "algorithm: dqn\nbatch_size: big\n"),
        "--out",
        str(tmp_path / "x"),
      ],
      "'batch_size' must be an integer",
    ),
    (["--config", good, "--out", str(out), "num_envs=3", "--resume"], "different config (num_envs: 2 there, 3 now)"),
    (
      [
        "--config",
        write_config(tmp_path / "d.yaml", "algorithm: dqn\nenv_id: Pong-v5\n"),
        "--out",
        str(out),
        "--resume",
      ],
      "different config (algorithm: 'ppo' there, 'dqn' now)",
    ),
    (["--config", good, "--out", str(out)], "already holds a run; pass --resume"),
    (["--config", good, "--out", str(tmp_path / "empty"), "--resume"], "holds no run"),
    (["--config", good, "--out", str(out), "env_id=Pongg-v5"], "unknown env id 'Pongg-v5'"),
  ]
  for args, message in cases:
    code = main(["train-agent", "--quiet", *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.strip().count("\n") == 0, (args, err)
  assert files_digest(out) == before


def test_evaluate_agent_scores_whole_games(tmp_path, capsys):
  agent = str(Path(__file__).resolve().parents[1] / "jaxprobe" / "assets" / "agents" / "pong")
  assert (
    main(
      [
        "evaluate-agent",
        "--agent",
        agent,
        "--episodes",
        "2",
        "--gif",
        str(tmp_path / "g.gif"),
        "--json",
        str(tmp_path / "s.json"),
        "--quiet",
      ]
    )
    == 0
  )
  import json

  result = json.loads((tmp_path / "s.json").read_text())
  # A whole Pong game ends when one side reaches 21; the shipped agent wins (random play: -20.7).
  assert result["episodes"] == 2 and 0 < result["min"] <= result["max"] <= 21
  assert (tmp_path / "g.gif").stat().st_size > 1000
  assert main(["evaluate-agent", "--agent", agent, "--episodes", "0"]) == 2
