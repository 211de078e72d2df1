"""Generator training and collection on 2 processes x CPU devices on the loopback address, against 1
process (`jaxprobe --processes 2 ...`, as on real hosts). A file of its own so that pytest's two
workers run it beside `test_hosts.py` (`--dist loadfile`)."""

import re

import numpy as np
import pytest
from test_hosts import finish, free_port, make_files, start

from jaxprobe.agents import load_agent
from jaxprobe.cli import main
from jaxprobe.collection.recorder import collect


@pytest.fixture(scope="module")
def files(pong_q_agent_path, tmp_path_factory):
  return make_files(pong_q_agent_path, tmp_path_factory.mktemp("hosts_training"))


TINY_GENERATOR = (
  "latent_dim: 8\nwidths: [4, 8, 8, 8]\nbatch_size: 8\ncheckpoint_every: 2\nlog_every: 1\nfit_prior: false\n"
)


# Conv biases that feed a batch norm cannot change the loss, so their gradient is zero but for
# float noise that differs with the order of the all-reduce; Adam's first steps turn that noise into
# steps of +-lr. They, their Adam moments and the running means they shift are left out.
def no_op(name):
  return ("bias" in name and ("enc_convs_" in name or "dec_ups_" in name)) or ("_norms_" in name and "mean" in name)


def train_args(files, out, steps):
  config = files.folder / "tiny.yaml"
  config.write_text(TINY_GENERATOR)
  return ["train-generator", "--config", str(config), "--dataset", str(files.dataset), "--agent", files.agent] + [
    "--out",
    str(out),
    "--quiet",
    f"total_steps={steps}",
  ]


def checkpoint(run, agent):
  """The training state of a run's latest checkpoint, restored onto this process's one device."""
  import optax
  import orbax.checkpoint as ocp

  from jaxprobe.generator.train import GeneratorConfig, generator_spec, init_state

  config = GeneratorConfig(latent_dim=8, widths=(4, 8, 8, 8), batch_size=8)
  target = init_state(generator_spec(config, agent), config, optax.adam(config.lr))
  step = max(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit())
  checkpointer = ocp.StandardCheckpointer()
  try:
    return checkpointer.restore((run / "checkpoints" / str(step) / "state").absolute(), target)
  finally:
    checkpointer.close()


def assert_same_training(a, b):
  import jax

  assert int(a.step) == int(b.step)
  np.testing.assert_array_equal(jax.random.key_data(a.key), jax.random.key_data(b.key))
  compared = 0
  for part, x_tree, y_tree in (
    ("state", (a.params, a.batch_stats), (b.params, b.batch_stats)),
    ("adam", a.opt_state, b.opt_state),
  ):
    for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(x_tree)[0], jax.tree.leaves(y_tree)):
      name = part + jax.tree_util.keystr(path)
      x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
      if no_op(name):
        continue
      if part == "state":
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6, err_msg=name)
      else:  # gradient averages: sums in another order, so agreement to 0.1% of each leaf's size
        assert np.linalg.norm(x - y) <= 1e-3 * np.linalg.norm(y) + 1e-9, name
      compared += 1
  assert compared > 40


def test_generator_training_on_two_processes_equals_one_and_their_checkpoints_cross(files):
  """2 steps on 2 processes x 2 devices and on 1 process x 4 give the same state; each run then
  resumes on the other layout (a checkpoint of 2 processes on 1, and of 1 on 2) to the same step 3."""
  two, one = files.folder / "train_two", files.folder / "train_one"
  port = free_port()
  runs = [start(train_args(files, two, 2), i, port=port) for i in (0, 1)] + [
    start(train_args(files, one, 2), devices=4)
  ]
  results = [finish(p) for p in runs]
  for code, _, err in results:
    assert code == 0, err[-2000:]
  for _, _, err in results[:2]:  # each process read only its own devices' half of every batch
    rows, batches = map(int, re.search(r"read (\d+) rows of the dataset for (\d+) batches of 8", err).groups())
    assert batches >= 2 and rows == 4 * batches
  assert "trained" in results[0][1] and "trained" not in results[1][1]
  losses = [np.loadtxt(run / "curve.csv", delimiter=",", skiprows=1)[:, -1] for run in (two, one)]
  assert (two / "generator").is_dir() and len(losses[0]) == 2
  np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)
  agent = load_agent(files.agent)
  assert_same_training(checkpoint(two, agent), checkpoint(one, agent))
  port = free_port()
  resumed = [start(train_args(files, one, 3) + ["--resume"], i, port=port) for i in (0, 1)] + [
    start(train_args(files, two, 3) + ["--resume"], devices=4)
  ]
  for code, _, err in (finish(p) for p in resumed):
    assert code == 0, err[-2000:]
  assert_same_training(checkpoint(two, agent), checkpoint(one, agent))


def test_a_collection_on_two_processes_is_one_dataset_of_their_shares(files, tmp_path):
  from jaxprobe.collection.dataset import open_dataset
  from jaxprobe.commands.collect import PART_SEED_STRIDE

  out, port = tmp_path / "both", free_port()
  args = ["collect", "--agent", files.agent, "--frames", "21", "--num-envs", "2", "--seed", "5", "--quiet", "--out"]
  workers = [start(args + [str(out)], i, port=port, devices=1) for i in (0, 1)]
  results = [finish(p) for p in workers]
  for code, _, err in results:
    assert code == 0, err[-2000:]
  assert "collected 21 states" in results[0][1] and "collected" not in results[1][1]
  both = open_dataset(out)  # checksums verified
  assert len(both) == 21 and both.manifest["processes"] == 2 and not (tmp_path / "both.parts").exists()
  # Each process collected its own share with its own seed: the same states as one process would.
  agent = load_agent(files.agent)
  alone = []
  for p, share in ((0, 11), (1, 10)):
    collect(agent, tmp_path / f"alone{p}", share, num_envs=2, seed=5 + PART_SEED_STRIDE * p, progress=False)
    alone.append(open_dataset(tmp_path / f"alone{p}"))
  for name in ("gray", "colour", "actions", "mask", "ram"):
    np.testing.assert_array_equal(both[name], np.concatenate([a[name] for a in alone]), err_msg=name)
  offset = int(alone[0]["episodes"].max()) + 1  # the second part's games keep ids of their own
  np.testing.assert_array_equal(both["episodes"], np.concatenate([alone[0]["episodes"], alone[1]["episodes"] + offset]))
  assert main(["dataset", "info", str(out)]) == 0
