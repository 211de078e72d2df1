"""Stable-Baselines3 models written by SB3 itself load as jaxprobe agents whose outputs equal SB3's
policy outputs on the same observations; files that are not what they claim are refused in one line."""

import io
import json
import pickle
import zipfile

import gymnasium as gym
import numpy as np
import pytest
import sb3_contrib
import stable_baselines3 as sb3  # the test extra: SB3 writes the files, torch computes its outputs
import torch
from whole_pipeline import run_whole_pipeline

from jaxprobe.agents import load_agent, save_agent
from jaxprobe.agents.torch_file import load_torch_file
from jaxprobe.cli import main
from jaxprobe.errors import UserError


class AtariShaped(gym.Env):
  """Observations as SB3's Atari wrappers give them (4 stacked 84x84 grayscale frames, channel first)."""

  def __init__(self, actions: int = 6, shape=(4, 84, 84)):
    self.observation_space = gym.spaces.Box(0, 255, shape, np.uint8)
    self.action_space = gym.spaces.Discrete(actions)

  def reset(self, seed=None, options=None):
    return self.observation_space.sample(), {}

  def step(self, action):
    return self.observation_space.sample(), 0.0, False, False, {}


def write_model(algo: str, path, actions: int = 6, **kwargs):
  cls = {"ppo": sb3.PPO, "a2c": sb3.A2C, "dqn": sb3.DQN, "qrdqn": sb3_contrib.QRDQN}[algo]
  if algo in ("dqn", "qrdqn"):
    kwargs.setdefault("buffer_size", 64)
  policy = kwargs.pop("policy", "CnnPolicy")
  model = cls(policy, kwargs.pop("env", AtariShaped(actions)), seed=0, device="cpu", **kwargs)
  if algo != "dqn":  # non-zero heads, so a transposed or misplaced weight cannot pass unseen
    with torch.no_grad():
      for p in model.policy.parameters():
        p.add_(0.05 * torch.randn_like(p))
  model.save(path)
  return model


def observations(n=8, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, 4, 84, 84), dtype=np.uint8)


@pytest.mark.parametrize("algo", ["ppo", "a2c"])
def test_actor_critic_models_give_sb3s_logits_and_values(tmp_path, algo):
  model = write_model(algo, tmp_path / f"{algo}-PongNoFrameskip-v4.zip")
  agent = load_agent(tmp_path / f"{algo}-PongNoFrameskip-v4.zip")
  assert (agent.spec.kind, agent.spec.num_actions, agent.spec.env_id) == ("actor_critic", 6, "Pong-v5")
  obs = observations()
  with torch.no_grad():
    tensor = torch.as_tensor(obs)
    logits = model.policy.get_distribution(tensor).distribution.logits  # log-softmax of action_net's output
    values = model.policy.predict_values(tensor)[:, 0]
  out = agent.spec.apply(agent.params, obs)
  log_softmax = out["logits"] - np.log(np.exp(out["logits"]).sum(-1, keepdims=True))
  np.testing.assert_allclose(log_softmax, logits.numpy(), atol=1e-5)
  np.testing.assert_allclose(out["value"], values.numpy(), atol=1e-5)
  assert "terminal on life loss" in agent.metadata["training_differences"]


def test_dqn_models_give_sb3s_q_values(tmp_path):
  model = write_model("dqn", tmp_path / "m.zip")
  with pytest.raises(UserError, match="does not say which game it plays: pass --env"):
    load_agent(tmp_path / "m.zip")
  agent = load_agent(tmp_path / "m.zip", env_id="Pong-v5")
  obs = observations(seed=1)
  with torch.no_grad():
    q = model.q_net(torch.as_tensor(obs)).numpy()
  np.testing.assert_allclose(agent.spec.apply(agent.params, obs)["q"], q, atol=1e-5)
  assert agent.spec.kind == "q" and agent.metadata["source"] == "Stable-Baselines3 DQN (CnnPolicy)"


def test_qr_dqn_models_give_sb3_contribs_quantiles_and_their_mean(tmp_path):
  path = tmp_path / "qrdqn-SeaquestNoFrameskip-v4.zip"
  model = write_model("qrdqn", path, actions=18, policy_kwargs=dict(n_quantiles=7))
  agent = load_agent(path)
  assert (agent.spec.kind, agent.spec.quantiles, agent.spec.env_id) == ("q", 7, "Seaquest-v5")
  obs = observations(seed=2)
  with torch.no_grad():
    theirs = model.quantile_net(torch.as_tensor(obs)).numpy()  # (N, quantiles, actions)
  out = agent.spec.apply(agent.params, obs)
  np.testing.assert_allclose(out["quantiles"], theirs.transpose(0, 2, 1), atol=1e-5)
  np.testing.assert_allclose(out["q"], theirs.mean(1), atol=1e-5)
  assert agent.metadata["source"] == "Stable-Baselines3 QR-DQN (sb3-contrib CnnPolicy)"
  save_agent(tmp_path / "saved", agent)  # kept as a jaxprobe agent, it stays a QR-DQN one
  again = load_agent(tmp_path / "saved")
  assert again.spec == agent.spec
  np.testing.assert_allclose(again.spec.apply(again.params, obs)["quantiles"], out["quantiles"], atol=1e-6)


def test_a_pickle_that_would_run_code_is_refused_and_nothing_runs(tmp_path):
  marker = tmp_path / "ran"

  class Payload:
    def __reduce__(self):
      return (exec, (f"open({str(marker)!r}, 'w').write('x')",))

  buffer = io.BytesIO()
  with zipfile.ZipFile(buffer, "w") as z:
    z.writestr("archive/data.pkl", pickle.dumps({"w": Payload()}, protocol=2))
  with pytest.raises(UserError, match=r"asks to run (__builtin__|builtins)\.exec when loaded.*nothing was run"):
    load_torch_file(buffer.getvalue(), "policy.pth")
  assert not marker.exists()
  # The same inside an SB3 zip, through the command line: one line, exit 2.
  write_model("ppo", tmp_path / "Pong-v5.zip")
  with zipfile.ZipFile(tmp_path / "Pong-v5.zip") as z:
    entries = {n: z.read(n) for n in z.namelist()}
  entries["policy.pth"] = buffer.getvalue()
  with zipfile.ZipFile(tmp_path / "evil-Pong-v5.zip", "w") as z:
    for name, data in entries.items():
      z.writestr(name, data)
  assert main(["evaluate-agent", "--agent", str(tmp_path / "evil-Pong-v5.zip"), "--episodes", "1"]) == 2
  assert not marker.exists()


def test_files_that_are_not_what_they_claim_are_refused_in_one_line(tmp_path, capsys):
  good = tmp_path / "Pong-v5.zip"
  write_model("ppo", good)
  (tmp_path / "truncated-Pong-v5.zip").write_bytes(good.read_bytes()[:5000])
  write_model("ppo", tmp_path / "mlp-Pong-v5.zip", policy="MlpPolicy", env=AtariShaped(shape=(8,)))
  write_model("dqn", tmp_path / "eighteen-Pong-v5.zip", actions=18)
  with zipfile.ZipFile(tmp_path / "other-Pong-v5.zip", "w") as z:
    z.writestr("notes.txt", "hello")
  cases = {
    "truncated-Pong-v5.zip": "is not a readable zip file",
    "mlp-Pong-v5.zip": "is an MLP policy; jaxprobe reads Atari agents with SB3's CnnPolicy",
    "eighteen-Pong-v5.zip": "chooses among 18 actions, Pong-v5 has 6",
    "other-Pong-v5.zip": "is a zip file but not a Stable-Baselines3 model",
  }
  for name, message in cases.items():
    assert main(["evaluate-agent", "--agent", str(tmp_path / name), "--episodes", "1"]) == 2, name
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err, err
  data = json.loads(zipfile.ZipFile(good).read("data"))
  assert data["observation_space"]["_shape"] == [4, 84, 84]  # what the loader checks is where SB3 puts it


def test_an_imported_sb3_agent_goes_through_the_whole_pipeline(tmp_path):
  agent = tmp_path / "ppo-PongNoFrameskip-v4.zip"
  write_model("ppo", agent)
  assert "Pong-v5" in run_whole_pipeline(str(agent), tmp_path)


def torch_zip(pickled: bytes, storage: bytes = b"\0" * 4) -> bytes:
  """A file laid out as torch.save lays it out, around a hand-written pickle."""
  buffer = io.BytesIO()
  with zipfile.ZipFile(buffer, "w") as z:
    z.writestr("archive/data.pkl", pickled)
    z.writestr("archive/data/0", storage)
  return buffer.getvalue()


def tensor_record(size, stride, offset=0, numel=1) -> bytes:
  """Pickle opcodes (protocol 0/1) of `_rebuild_tensor_v2(storage 0, offset, size, stride, False)`."""
  ints = lambda xs: b"(" + b"".join(b"I%d\n" % x for x in xs) + b"t"
  storage = b"(Vstorage\nctorch\nFloatStorage\nV0\nVcpu\nI%d\ntQ" % numel
  return b"ctorch._utils\n_rebuild_tensor_v2\n(" + storage + b"I%d\n" % offset + ints(size) + ints(stride) + b"I00\ntR"


def test_what_a_crafted_file_could_do_with_the_allowed_names_is_refused():
  # A view outside its storage: 1,000 floats read from a storage of one.
  with pytest.raises(UserError, match="does not fit its storage"):
    load_torch_file(torch_zip(tensor_record((1000,), (1000,)) + b"."), "f")
  with pytest.raises(UserError, match="does not fit its storage"):
    load_torch_file(torch_zip(tensor_record((2,), (1,), offset=1, numel=1) + b"."), "f")
  # A state set on an allowed object (here: the float storage type, to change its dtype).
  with pytest.raises(UserError, match="sets the state of a _Storage; refused"):
    load_torch_file(torch_zip(b"ctorch\nFloatStorage\n(Vdtype\nVu1\ndb."), "f")
  # One stored storage rebuilt again and again: more tensor data than the file holds.
  many = b"(" + tensor_record((65536,), (1,), numel=65536) * 40 + b"l."
  with pytest.raises(UserError, match="builds far more tensor data than it stores"):
    load_torch_file(torch_zip(many, b"\0" * 4 * 65536), "f")
  # The same records within bounds load, as numpy.
  ok = load_torch_file(
    torch_zip(b"(" + tensor_record((2, 2), (2, 1), numel=4) + b"l.", np.arange(4, dtype="<f4").tobytes()), "f"
  )
  np.testing.assert_array_equal(ok[0], [[0, 1], [2, 3]])
