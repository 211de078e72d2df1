"""Collection, the dataset format and the loader."""

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxprobe import saliency
from jaxprobe.agents.checkpoint import load_agent
from jaxprobe.cli import main
from jaxprobe.collection import dataset as ds
from jaxprobe.collection.dataset import open_dataset
from jaxprobe.collection.loader import batches
from jaxprobe.collection.recorder import collect
from jaxprobe.envs import make_atari
from jaxprobe.errors import UserError

ENVS, STEPS = 2, 96  # one chunk of 96 steps x 2 envs: row = env * STEPS + t


@pytest.fixture(scope="module")
def agent(pong_q_agent_path):
  return load_agent(pong_q_agent_path)


@pytest.fixture(scope="module")
def greedy_dataset(agent, tmp_path_factory):
  out = tmp_path_factory.mktemp("d") / "greedy"
  collect(agent, out, ENVS * STEPS, epsilon=0.0, num_envs=ENVS, seed=5, chunk_steps=STEPS, progress=False)
  return open_dataset(out)


def test_recorded_states_are_what_the_agent_saw(greedy_dataset):
  d = greedy_dataset
  env = make_atari("Pong-v5", num_envs=ENVS, seed=5)
  obs, info = env.reset()
  actions = np.asarray(d["actions"]).reshape(ENVS, STEPS)
  gray = np.asarray(d["gray"]).reshape(ENVS, STEPS, 4, 84, 84)
  ram = np.asarray(d["ram"]).reshape(ENVS, STEPS, 128)
  for t in range(STEPS):
    np.testing.assert_array_equal(obs, gray[:, t])
    np.testing.assert_array_equal(info["ram"], ram[:, t])  # the emulator's memory at that state
    obs, *_, info = env.step(actions[:, t])
  # The colour stack is the same state: its luminance is within envpool's conversion error.
  colour = np.asarray(d["colour"], np.float32).reshape(-1, 84, 84, 4, 3)
  lum = (colour @ np.array([0.299, 0.587, 0.114])).transpose(0, 3, 1, 2)
  assert np.abs(lum - np.asarray(d["gray"])).max() <= 20


def test_masks_outputs_and_greedy_actions_match_the_suite(agent, greedy_dataset):
  d = greedy_dataset
  gray = np.asarray(d["gray"][:64])
  want_mask = saliency.saliency_mask(saliency.guided_backprop(agent.spec, agent.params, gray))
  np.testing.assert_allclose(d["mask"][:64], want_mask, rtol=1e-4, atol=1e-6)
  q = agent.spec.apply(agent.params, gray)["q"]
  np.testing.assert_allclose(d["q"][:64], q, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(d["actions"], np.argmax(d["q"], -1))  # epsilon 0 is the greedy agent


def test_manifest_and_roundtrip(agent, greedy_dataset, tmp_path):
  m = greedy_dataset.manifest
  assert m["count"] == ENVS * STEPS and m["env_id"] == "Pong-v5" and m["format_version"] == ds.FORMAT_VERSION
  assert m["agent"]["num_actions"] == 6 and len(m["agent"]["fingerprint"]) == 16
  for name, info in m["arrays"].items():
    assert list(greedy_dataset[name].shape) == info["shape"] and greedy_dataset[name].shape[0] == ENVS * STEPS
  assert set(m["arrays"]) == {"colour", "gray", "ram", "actions", "rewards", "dones", "episodes", "steps", "mask", "q"}
  # Steps within an episode count up by one row to the next.
  steps = np.asarray(greedy_dataset["steps"]).reshape(ENVS, STEPS)
  assert (np.diff(steps, axis=1) == 1).all()


def test_merged_datasets_keep_every_row_and_their_games_apart(agent, greedy_dataset, tmp_path):
  other = tmp_path / "other"
  collect(agent, other, 64, epsilon=0.5, num_envs=ENVS, seed=9, progress=False)
  assert main(["dataset", "merge", str(greedy_dataset.path), str(other), "--out", str(tmp_path / "both")]) == 0
  both, second = open_dataset(tmp_path / "both"), open_dataset(other)
  assert len(both) == len(greedy_dataset) + 64 and [p["frames"] for p in both.manifest["parts"]] == [ENVS * STEPS, 64]
  for name in greedy_dataset.arrays:
    if name != "episodes":
      np.testing.assert_array_equal(both[name], np.concatenate([greedy_dataset[name], second[name]]))
  first_games = set(np.asarray(both["episodes"][: ENVS * STEPS]).tolist())
  assert first_games.isdisjoint(np.asarray(both["episodes"][ENVS * STEPS :]).tolist())


def test_killed_collection_resumes_to_a_valid_dataset(agent, tmp_path, monkeypatch):
  out = tmp_path / "d"
  real_write = ds.write_progress
  calls = []

  def dies_after_two_chunks(*args):
    real_write(*args)
    calls.append(1)
    if len(calls) == 3:  # the initial mark, then two flushed chunks
      raise KeyboardInterrupt

  monkeypatch.setattr(ds, "write_progress", dies_after_two_chunks)
  with pytest.raises(KeyboardInterrupt):
    collect(agent, out, 200, num_envs=2, seed=1, chunk_steps=20, progress=False)
  monkeypatch.setattr(ds, "write_progress", real_write)
  assert not out.exists() and ds.partial_path(out).is_dir()
  with pytest.raises(UserError, match="partial collection"):
    open_dataset(out)
  with pytest.raises(UserError, match="pass --resume"):
    collect(agent, out, 200, num_envs=2, seed=1, chunk_steps=20, progress=False)
  with pytest.raises(UserError, match="made with epsilon"):
    collect(agent, out, 200, epsilon=0.5, num_envs=2, seed=1, chunk_steps=20, resume=True, progress=False)
  # A partial collection begun by an older jaxprobe lacks an array: one line, and it is left as it was.
  ram = ds.partial_path(out) / "ram.npy"
  ram.rename(ram.with_suffix(".kept"))
  with pytest.raises(UserError, match="lacks ram .begun by an older jaxprobe.; delete it"):
    collect(agent, out, 200, num_envs=2, seed=1, chunk_steps=20, resume=True, progress=False)
  ram.with_suffix(".kept").rename(ram)
  collect(agent, out, 200, num_envs=2, seed=1, chunk_steps=20, resume=True, progress=False)
  d = open_dataset(out)
  assert len(d) == 200 and not ds.partial_path(out).exists()
  assert (np.asarray(d["gray"][80:]).reshape(120, -1).max(1) > 0).all()  # the rows after the kill were written
  assert len(np.unique(d["episodes"][:80])) == 2 and d["episodes"][80:].min() >= 2  # new games, new ids


def test_loader_batches_are_seeded_and_resumable(greedy_dataset):
  first = [b["actions"] for b, _ in zip(batches(greedy_dataset, 32, seed=3, names=("actions", "gray")), range(8))]
  again = [b["actions"] for b, _ in zip(batches(greedy_dataset, 32, seed=3, names=("actions",)), range(8))]
  later = [
    b["actions"] for b, _ in zip(batches(greedy_dataset, 32, seed=3, names=("actions",), start_batch=5), range(3))
  ]
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(first[5:], later):
    np.testing.assert_array_equal(a, b)
  assert isinstance(first[0], jax.Array) and first[0].shape == (32,)
  epoch = np.concatenate([np.asarray(x) for x in first[:6]])  # 192 rows / 32 = 6 batches per epoch
  assert sorted(np.bincount(epoch, minlength=6).tolist()) == sorted(
    np.bincount(greedy_dataset["actions"], minlength=6).tolist()
  )


def damage(path: Path, how: str) -> None:
  if how == "missing_array":
    (path / "mask.npy").unlink()
  elif how == "truncated_array":
    data = (path / "colour.npy").read_bytes()
    (path / "colour.npy").write_bytes(data[: len(data) // 2])
  elif how == "checksum":
    a = np.load(path / "actions.npy", mmap_mode="r+")
    a[0] = (a[0] + 1) % 6
    a.flush()
  elif how == "newer_format":
    m = json.loads((path / "manifest.json").read_text())
    m["format_version"] = 99
    (path / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize(
  "how, message",
  [
    ("missing_array", "missing mask.npy"),
    ("truncated_array", "colour.npy is truncated"),
    ("checksum", "actions.npy does not match its checksum"),
    ("newer_format", "format version 99"),
  ],
)
def test_damaged_datasets_are_one_line_errors(agent, tmp_path, capsys, how, message):
  out = tmp_path / "d"
  collect(agent, out, 40, num_envs=2, chunk_steps=20, progress=False)
  damage(out, how)
  before = sorted(p.name for p in out.iterdir())
  assert main(["dataset", "info", str(out)]) == 2
  err = capsys.readouterr().err
  assert message in err and err.strip().count("\n") == 0
  assert sorted(p.name for p in out.iterdir()) == before  # nothing written into it


def test_collect_bad_arguments(tmp_path, capsys, pong_q_agent_path):
  existing = tmp_path / "exists"
  existing.mkdir()
  (existing / "keep").write_text("x")
  cases = [
    (["--frames", "0", "--out", str(tmp_path / "a")], "--frames: must be an integer >= 1"),
    (["--env", "Seaquest-v5", "--out", str(tmp_path / "b")], "the agent has 6 actions but Seaquest-v5 has 18"),
    (["--out", str(existing)], "already exists"),
    (["--env", "Pongg-v5", "--out", str(tmp_path / "c")], "unknown env id"),
  ]
  for args, message in cases:
    assert main(["collect", "--agent", str(pong_q_agent_path), "--quiet", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.strip().count("\n") == 0, err
  assert (existing / "keep").read_text() == "x" and not (tmp_path / "b").exists()
  assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")]  # no half-made collection left


def test_dataset_summary_says_how_far_apart_the_best_two_q_values_are(greedy_dataset):
  q = np.asarray(greedy_dataset["q"], np.float64)
  margins = [sorted(row)[-1] - sorted(row)[-2] for row in q]
  info = ds.summary(greedy_dataset)["q_values"]
  assert info["margin_best_two"]["p50"] == pytest.approx(np.median(margins), rel=1e-5)
  assert info["mean"] == pytest.approx(q.mean(), rel=1e-5)
  assert info["spread_over_actions"] == pytest.approx(np.mean([np.std(row) for row in q]), rel=1e-5)
