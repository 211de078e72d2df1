"""Many processes on this machine, as on a pod: 2 processes x 2 CPU devices on the loopback address,
started with the same command as on real hosts (`jaxprobe --processes 2 --process-id I --coordinator
...`), against 1 process with 4 devices."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import types

import numpy as np
import pytest
from test_probe import tiny_generator

from jaxprobe import hosts
from jaxprobe.agents import load_agent
from jaxprobe.cli import main
from jaxprobe.collection.recorder import collect
from jaxprobe.errors import UserError
from jaxprobe.generator.spec import save_generator


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def start(args, process_id=None, processes=2, port=None, devices=2, log=None, heartbeat=60):
  """`jaxprobe [--processes ...] args` as its own process (the executable, with its supervisor)."""
  env = dict(os.environ, JAX_NUM_CPU_DEVICES=str(devices))
  env.pop(hosts.CHILD_ENV, None)
  many = [] if process_id is None else ["--processes", str(processes), "--process-id", str(process_id)]
  many += [] if port is None else ["--coordinator", f"127.0.0.1:{port}", "--heartbeat-timeout", str(heartbeat)]
  many += [] if log is None else ["--process-log", str(log)]
  return subprocess.Popen(
    [sys.executable, "-m", "jaxprobe.cli", *many, *args],
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )


def finish(process, timeout=240):
  try:
    out, err = process.communicate(timeout=timeout)
  finally:  # never leave a JAX process behind for the rest of the suite
    if process.poll() is None:
      process.kill()
  return process.returncode, out, err


@pytest.fixture(scope="module")
def files(pong_q_agent_path, tmp_path_factory):
  folder = tmp_path_factory.mktemp("hosts")
  agent = load_agent(pong_q_agent_path)
  save_generator(folder / "gen", tiny_generator(agent))
  collect(agent, folder / "data", 64, num_envs=2, seed=3, progress=False)
  return types.SimpleNamespace(
    agent=str(pong_q_agent_path), generator=str(folder / "gen"), dataset=str(folder / "data"), folder=folder
  )


def probe_args(files, out, num=8, steps=4):
  return ["probe", "--agent", files.agent, "--generator", files.generator, "--target", "T-"] + [
    "--num",
    str(num),
    "--steps",
    str(steps),
    "--quiet",
    "--out",
    str(out),
  ]


def test_a_two_process_probe_writes_one_run_equal_to_one_process_with_as_many_devices(files):
  port, two, one = free_port(), files.folder / "two", files.folder / "one"
  workers = [start(probe_args(files, two), i, port=port, log=files.folder / "logs") for i in (1, 0)]
  single = start(probe_args(files, one), devices=4)
  results = [finish(p) for p in (*workers, single)]
  for code, _, err in results:
    assert code == 0, err[-2000:]
  assert "wrote" in results[1][1] and results[0][1].count("wrote") == 0  # process 0 reports, process 1 does not
  meta = json.loads((two / "probe.json").read_text())
  assert len(meta["devices"]) == 4 and meta["devices"] != json.loads((one / "probe.json").read_text())["devices"]
  for folder in ("latent_Tminus",):
    for name in ("latents.npy", "gray.npy"):
      np.testing.assert_allclose(np.load(two / folder / name), np.load(one / folder / name), rtol=1e-5, atol=1e-5)
    a, b = (json.loads((run / folder / "run.json").read_text()) for run in (two, one))
    np.testing.assert_allclose(a["energy_end"], b["energy_end"], rtol=1e-5, atol=2e-5)  # run.json rounds to 1e-5
  assert (files.folder / "logs" / "process-1.log").exists()


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


def test_a_refusal_on_one_process_is_every_process_s_and_not_a_lost_process(files):
  from jaxprobe.files import sole_writer

  out, port = files.folder / "held", free_port()
  with sole_writer(out):  # process 0 cannot take its output folder; process 1 would run on without it
    workers = [start(probe_args(files, out), i, port=port) for i in (0, 1)]
    (code0, _, err0), (code1, _, err1) = (finish(p, timeout=120) for p in workers)
  assert code0 == code1 == 2, err0[-2000:] + err1[-2000:]
  assert "is being written by another jaxprobe command" in err0.strip().splitlines()[-1]
  assert (
    err1.strip()
    .splitlines()[-1]
    .endswith("error: process 0 of 2 refused to start (its own line says why); fix that and start every process again")
  )


def test_a_lost_process_ends_the_others_with_one_line_within_a_minute(files):
  for lost in (1, 0):  # a worker, then the coordinator
    port = free_port()
    long = probe_args(files, files.folder / f"lost{lost}", num=8, steps=100000)
    workers = {i: start(long, i, port=port, heartbeat=5) for i in (0, 1)}
    time.sleep(1)
    deadline = time.time() + 120
    while time.time() < deadline and not (files.folder / f"lost{lost}").exists():
      time.sleep(0.5)  # process 0 makes the run folder once both have joined and loaded
    assert (files.folder / f"lost{lost}").exists(), "the processes did not start"
    time.sleep(3)
    workers[lost].send_signal(signal.SIGKILL)
    survivor = workers[1 - lost]
    t = time.time()
    code, _, err = finish(survivor, timeout=90)
    assert time.time() - t < 60
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == hosts.LOST_PROCESS, err[-2000:]
    assert lines[-1].startswith("jaxprobe probe: error: process")
    assert ("process 0 (the coordinator)" if lost == 0 else f"process {lost} of 2") in lines[-1]
    assert "--resume" in lines[-1] and not any("Check failure" in line or line.startswith("F1") for line in lines)
    workers[lost].wait()


def test_processes_started_with_different_flags_refuse_in_one_line(files):
  port = free_port()
  workers = [start(probe_args(files, files.folder / "mismatch", num=8 + 8 * i), i, port=port) for i in (0, 1)]
  for code, _, err in (finish(p, timeout=120) for p in workers):
    assert code == 2, err[-2000:]
    line = err.strip().splitlines()[-1]
    assert "process 1 was started with another command than process 0" in line and "--num 16" in line, line
  assert not (files.folder / "mismatch").exists()


def test_host_settings_are_checked_before_anything_runs(files, capsys):
  from jaxprobe.cli import many_hosts

  assert many_hosts(["probe", "--process", "1"])[1] == "probe"  # not an abbreviation of --processes
  assert many_hosts(["--processes", "x", "probe"]) == (None, "") and capsys.readouterr().err == ""  # main says it
  with pytest.raises(UserError, match="--processes must be at least 1"):
    hosts.from_args(types.SimpleNamespace(processes=0))
  assert main(["--processes", "2", "--process-id", "0", "dataset", "info", "nowhere"]) == 2
  assert "--processes 2 needs --coordinator" in capsys.readouterr().err
  args = ["--processes", "2", "--process-id", "0", "--coordinator", "127.0.0.1:1", "goggles", "--agent", files.agent]
  assert main([*args, "--generator", files.generator]) == 2
  line = capsys.readouterr().err
  assert "runs on one process; drop --processes (many hosts run: collect, train-generator, probe)" in line, line
  with pytest.raises(UserError, match="--process-id must be in 0..1"):
    hosts.from_args(types.SimpleNamespace(processes=2, process_id=2, coordinator="h:1"))
  env = {"JAXPROBE_PROCESSES": "4", "JAXPROBE_PROCESS_ID": "3", "JAX_COORDINATOR_ADDRESS": "h:9"}
  assert hosts.from_args(types.SimpleNamespace(), env) == hosts.Hosts(4, 3, "h:9")
  assert hosts.shared_command(["--process-id", "1", "--process-log=x", "probe", "--num", "8"]) == [
    "probe",
    "--num",
    "8",
  ]


def test_the_lost_line_names_the_process_from_jaxs_own_log():
  run = hosts.Hosts(2, 0, "h:1", heartbeat_timeout=20)
  worker = (
    b"E1205 01:39:51.340609   22027 coordination_service.cc:1549] Use error polling to propagate the following "
    b"error to all tasks: UNAVAILABLE: The following tasks are unhealthy (stopped sending heartbeats):\n1\n"
  )
  leader = b"F1205 client.h:80] ... UNAVAILABLE: Failed to send RPC to coordination service. Either the leader task"
  assert "process 1 of 2 stopped" in hosts.lost_line("jaxprobe probe", run, worker)
  assert "process 0 (the coordinator) of 2" in hosts.lost_line("jaxprobe probe", hosts.Hosts(2, 1, "h:1"), leader)
