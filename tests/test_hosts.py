"""Many processes on this machine, as on a pod: 2 processes x 2 CPU devices on the loopback address,
started with the same command as on real hosts (`jaxprobe --processes 2 --process-id I --coordinator
...`), against 1 process with 4 devices."""

import json
import os
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


def make_files(agent_path, folder):
  """The inputs of the multi-process runs: the random Q agent, a tiny generator and 64 of its states."""
  agent = load_agent(agent_path)
  save_generator(folder / "gen", tiny_generator(agent))
  collect(agent, folder / "data", 64, num_envs=2, seed=3, progress=False)
  return types.SimpleNamespace(
    agent=str(agent_path), generator=str(folder / "gen"), dataset=str(folder / "data"), folder=folder
  )


@pytest.fixture(scope="module")
def files(pong_q_agent_path, tmp_path_factory):
  return make_files(pong_q_agent_path, tmp_path_factory.mktemp("hosts"))


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
