"""Agent networks, the agent interface, checkpoints and CleanRL import."""

import argparse
import json

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprobe import bundle
from jaxprobe.agents import Agent, AgentSpec, act, load_agent, save_agent
from jaxprobe.errors import UserError


class CleanRLQNetwork(nn.Module):
  """CleanRL's dqn_atari_jax.py network, as its file defines it (for writing real CleanRL files)."""

  action_dim: int

  @nn.compact
  def __call__(self, x):
    x = jnp.transpose(x, (0, 2, 3, 1))
    x = x / 255.0
    x = nn.relu(nn.Conv(32, kernel_size=(8, 8), strides=(4, 4), padding="VALID")(x))
    x = nn.relu(nn.Conv(64, kernel_size=(4, 4), strides=(2, 2), padding="VALID")(x))
    x = nn.relu(nn.Conv(64, kernel_size=(3, 3), strides=(1, 1), padding="VALID")(x))
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(512)(x))
    return nn.Dense(self.action_dim)(x)


class CleanRLTorso(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = jnp.transpose(x, (0, 2, 3, 1)) / 255.0
    for f, k, s in ((32, 8, 4), (64, 4, 2), (64, 3, 1)):
      x = nn.relu(nn.Conv(f, kernel_size=(k, k), strides=(s, s), padding="VALID")(x))
    return nn.relu(nn.Dense(512)(x.reshape((x.shape[0], -1))))


class CleanRLHead(nn.Module):
  size: int

  @nn.compact
  def __call__(self, x):
    return nn.Dense(self.size)(x)


OBS = np.random.default_rng(0).integers(0, 256, (3, 4, 84, 84), dtype=np.uint8)


def test_q_network_is_cleanrl_tree_and_function():
  cleanrl = CleanRLQNetwork(6)
  params = cleanrl.init(jax.random.key(1), OBS)
  spec = AgentSpec("q", 6, "Pong-v5")
  ours = jax.eval_shape(spec.init, jax.random.key(0))
  assert jax.tree_util.tree_structure(ours) == jax.tree_util.tree_structure(params)
  assert jax.tree_util.tree_map(lambda a: a.shape, ours) == jax.tree_util.tree_map(lambda a: a.shape, params)
  np.testing.assert_allclose(spec.apply(params, OBS)["q"], cleanrl.apply(params, OBS), rtol=1e-5, atol=1e-6)


def test_actor_critic_outputs():
  spec = AgentSpec("actor_critic", 18, "Seaquest-v5")
  out = spec.apply(spec.init(jax.random.key(0)), OBS)
  assert out["logits"].shape == (3, 18) and out["value"].shape == (3,)
  assert spec.action_head == "logits" and spec.heads == ("logits", "value")


def test_epsilon_greedy_actions():
  spec = AgentSpec("q", 6, "Pong-v5")
  params = spec.init(jax.random.key(0))
  obs = np.repeat(OBS[:1], 2000, axis=0)
  greedy = int(jnp.argmax(spec.apply(params, OBS[:1])["q"]))
  assert set(np.asarray(act(spec, params, obs, jax.random.key(1), 0.0)).tolist()) == {greedy}
  uniform = np.bincount(np.asarray(act(spec, params, obs, jax.random.key(2), 1.0)), minlength=6) / 2000
  np.testing.assert_allclose(uniform, 1 / 6, atol=0.04)
  mixed = np.asarray(act(spec, params, obs, jax.random.key(3), 0.3))
  assert abs((mixed != greedy).mean() - 0.3 * 5 / 6) < 0.04


def test_save_and_load_roundtrip(tmp_path):
  spec = AgentSpec("actor_critic", 6, "Pong-v5")
  agent = Agent(spec, spec.init(jax.random.key(0)), {"steps": 10})
  save_agent(tmp_path / "a", agent)
  loaded = load_agent(tmp_path / "a")
  assert loaded.spec == spec and loaded.metadata == {"steps": 10}
  jax.tree_util.tree_map(np.testing.assert_array_equal, loaded.params, jax.device_get(agent.params))
  # Saving again over it replaces it whole.
  other = Agent(spec, spec.init(jax.random.key(1)))
  save_agent(tmp_path / "a", other)
  jax.tree_util.tree_map(np.testing.assert_array_equal, load_agent(tmp_path / "a").params, jax.device_get(other.params))
  assert [p.name for p in tmp_path.iterdir()] == ["a"]  # no temporary folders left


def test_dqn_cleanrl_file_loads(tmp_path):
  params = CleanRLQNetwork(6).init(jax.random.key(1), OBS)
  path = tmp_path / "runs" / "Pong-v5__dqn_atari_jax__1__1700000000" / "dqn_atari_jax.cleanrl_model"
  path.parent.mkdir(parents=True)
  path.write_bytes(flax.serialization.to_bytes(params))  # what CleanRL writes
  agent = load_agent(path)
  assert agent.spec == AgentSpec("q", 6, "Pong-v5")
  np.testing.assert_allclose(
    agent.spec.apply(agent.params, OBS)["q"], CleanRLQNetwork(6).apply(params, OBS), rtol=1e-5, atol=1e-6
  )


def test_ppo_cleanrl_file_loads(tmp_path):
  torso = CleanRLTorso().init(jax.random.key(0), OBS)
  actor = CleanRLHead(18).init(jax.random.key(1), np.zeros((1, 512)))
  critic = CleanRLHead(1).init(jax.random.key(2), np.zeros((1, 512)))
  args = argparse.Namespace(env_id="Seaquest-v5", seed=1, learning_rate=2.5e-4, anneal_lr=True)
  path = tmp_path / "ppo_atari_envpool_xla_jax_scan.cleanrl_model"
  path.write_bytes(flax.serialization.to_bytes([vars(args), [torso, actor, critic]]))
  agent = load_agent(path)
  assert agent.spec == AgentSpec("actor_critic", 18, "Seaquest-v5")
  assert agent.metadata["cleanrl_args"]["seed"] == 1
  hidden = CleanRLTorso().apply(torso, OBS)
  out = agent.spec.apply(agent.params, OBS)
  np.testing.assert_allclose(out["logits"], CleanRLHead(18).apply(actor, hidden), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out["value"], CleanRLHead(1).apply(critic, hidden)[:, 0], rtol=1e-5, atol=1e-6)


def test_dqn_file_without_game_needs_env(tmp_path):
  path = tmp_path / "model.cleanrl_model"
  path.write_bytes(flax.serialization.to_bytes(CleanRLQNetwork(18).init(jax.random.key(1), OBS)))
  with pytest.raises(UserError, match="pass the env id"):
    load_agent(path)
  assert load_agent(path, env_id="Seaquest-v5").spec.num_actions == 18


def test_wrong_shape_names_parameter_and_shapes(tmp_path):
  params = CleanRLQNetwork(6).init(jax.random.key(1), OBS)
  params["params"]["Conv_1"]["kernel"] = np.zeros((4, 4, 32, 32), np.float32)
  path = tmp_path / "Pong-v5-dqn.cleanrl_model"
  path.write_bytes(flax.serialization.to_bytes(params))
  with pytest.raises(
    UserError,
    match=r"params/Conv_1/kernel has shape \(4, 4, 32, 32\) in the checkpoint, "
    r"the network expects \(4, 4, 32, 64\)",
  ):
    load_agent(path)


def test_saved_agent_with_edited_action_count_is_refused(tmp_path):
  spec = AgentSpec("q", 6, "Pong-v5")
  save_agent(tmp_path / "a", Agent(spec, spec.init(jax.random.key(0))))
  meta = json.loads((tmp_path / "a" / "agent.json").read_text())
  meta["num_actions"] = 18
  (tmp_path / "a" / "agent.json").write_text(json.dumps(meta))
  with pytest.raises(UserError, match=r"Dense_1/bias has shape \(6,\) in the checkpoint, the network expects \(18,\)"):
    load_agent(tmp_path / "a")


@pytest.mark.parametrize("damage", ["missing", "garbage_bytes", "spec_json", "params_deleted", "newer_format"])
def test_damaged_checkpoints_are_user_errors(tmp_path, damage):
  spec = AgentSpec("q", 6, "Pong-v5")
  path = save_agent(tmp_path / "a", Agent(spec, spec.init(jax.random.key(0))))
  if damage == "missing":
    path = tmp_path / "nope"
  elif damage == "garbage_bytes":
    path = tmp_path / "x.cleanrl_model"
    path.write_bytes(b"\x00\x01 not msgpack at all")
  elif damage == "spec_json":
    (path / "agent.json").write_text("{ broken")
  elif damage == "params_deleted":
    for f in (path / "params").rglob("*"):
      if f.is_file() and f.parent.name == "d":
        f.write_bytes(b"corrupt")
  elif damage == "newer_format":
    meta = json.loads((path / "agent.json").read_text())
    meta["format_version"] = 99
    (path / "agent.json").write_text(json.dumps(meta))
  with pytest.raises(UserError):
    load_agent(path)


def test_save_refuses_to_overwrite_a_non_agent_directory(tmp_path):
  (tmp_path / "keep.txt").write_text("mine")
  spec = AgentSpec("q", 6, "Pong-v5")
  with pytest.raises(UserError, match="not an agent checkpoint"):
    save_agent(tmp_path, Agent(spec, spec.init(jax.random.key(0))))
  assert (tmp_path / "keep.txt").read_text() == "mine"


def test_saving_over_a_checkpoint_keeps_the_files_beside_it_and_survives_a_failed_save(tmp_path, monkeypatch):
  spec = AgentSpec("q", 6, "Pong-v5")
  first, second = (Agent(spec, spec.init(jax.random.key(k))) for k in (0, 1))
  save_agent(tmp_path / "a", first)
  (tmp_path / "a" / "README.md").write_text("how it was trained")
  (tmp_path / "a" / "earlier").mkdir()
  save_agent(tmp_path / "a", second)
  assert (tmp_path / "a" / "README.md").read_text() == "how it was trained" and (tmp_path / "a" / "earlier").is_dir()
  jax.tree.map(np.testing.assert_array_equal, load_agent(tmp_path / "a").params, second.params)
  # A save that dies while writing the new tree leaves the old checkpoint whole, and no temporary files.
  monkeypatch.setattr(bundle, "_save_tree", lambda directory, tree: (_ for _ in ()).throw(OSError("disk full")))
  with pytest.raises(OSError):
    save_agent(tmp_path / "a", first)
  jax.tree.map(np.testing.assert_array_equal, load_agent(tmp_path / "a").params, second.params)
  assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["README.md", "agent.json", "earlier", "params"]


@pytest.mark.parametrize("kind", ["q", "actor_critic"])
def test_features_are_what_the_heads_read(kind):
  spec = AgentSpec(kind, 6, "Pong-v5")
  params = spec.init(jax.random.key(0))
  obs = np.random.default_rng(0).integers(0, 256, (3, 4, 84, 84)).astype(np.uint8)
  features = np.asarray(spec.features(params, obs))
  assert features.shape == (3, 512) and features.min() >= 0.0
  p = params["params"]
  head, out = ("Dense_1", "q") if kind == "q" else ("policy", "logits")
  want = np.asarray(spec.apply(params, obs)[out])
  np.testing.assert_allclose(features @ p[head]["kernel"] + p[head]["bias"], want, rtol=1e-5, atol=1e-5)
