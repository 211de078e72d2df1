"""Nothing lost, one writer per folder: SIGINT and SIGTERM during the long commands, two writers of one
folder, a holder killed with SIGKILL, a run killed before its first checkpoint, a write that fails."""

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxprobe import stops
from jaxprobe.agents import Agent, load_agent, save_agent
from jaxprobe.cli import main
from jaxprobe.collection.dataset import open_dataset
from jaxprobe.collection.recorder import collect
from jaxprobe.errors import Interrupted, UserError
from jaxprobe.generator.spec import save_generator
from jaxprobe.runs import RunDir
from tests.test_probe import tiny_generator

NATIVE_CRASH = ("Traceback", "Fatal Python error", "Segmentation fault", "Aborted", "core dumped", "terminate called")
TINY_GENERATOR = [
  "latent_dim=8",
  "widths=[4,8,8,8]",
  "batch_size=4",
  "log_every=1",
  "image_every=1000",
  "fit_prior=false",
]
TINY_PPO = (
  "algorithm: ppo\nenv_id: Pong-v5\nnum_envs: 2\nnum_steps: 32\nnum_minibatches: 2\nupdate_epochs: 1\nlog_every: 64\n"
)


def start(args: list[str], env_dir: Path) -> subprocess.Popen:
  return subprocess.Popen(
    [sys.executable, "-m", "jaxprobe.cli", *args, "--quiet"],
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
    cwd=Path(__file__).parent.parent,
    env={**os.environ, "JAXPROBE_LOCK_DIR": str(env_dir)},
  )


def wait_for(condition, process: subprocess.Popen, timeout: float = 90) -> None:
  t0 = time.time()
  while not condition():
    assert process.poll() is None, process.communicate()
    assert time.time() - t0 < timeout, "timed out"
    time.sleep(0.05)


def stop(process: subprocess.Popen, signum: int) -> tuple[int, str]:
  process.send_signal(signum)
  _, err = process.communicate(timeout=60)
  return process.returncode, err


def collect_args(agent: Path, out: Path, frames: int = 1024) -> list[str]:
  return ["collect", "--agent", str(agent), "--frames", str(frames), "--num-envs", "2", "--out", str(out)]


def latest_checkpoint(run: Path) -> int | None:
  steps = [int(p.name) for p in (run / "checkpoints").glob("*") if p.name.isdigit()]
  return max(steps, default=None)


def assert_clean_interrupt(code: int, err: str, signum: int) -> str:
  assert code == 128 + signum, err
  assert not any(s in err for s in NATIVE_CRASH), err
  last = err.strip().splitlines()[-1]
  assert f"interrupted ({signal.Signals(signum).name})" in last, err
  return last


@pytest.fixture(scope="module")
def data(pong_q_agent, tmp_path_factory):
  out = tmp_path_factory.mktemp("interrupts") / "data"
  collect(pong_q_agent, out, 32, num_envs=2, seed=3, progress=False)
  return out


@pytest.fixture
def lock_dir(tmp_path, monkeypatch):
  monkeypatch.setenv("JAXPROBE_LOCK_DIR", str(tmp_path / "locks"))
  return tmp_path / "locks"


def test_a_stop_waits_for_the_loops_next_check_and_for_a_write_but_not_for_a_second_ctrl_c():
  ended = []

  def at_once(signum):  # the executable's `os._exit`, as an exception here
    ended.append(signum)
    raise SystemExit(128 + signum)

  previous = stops.install(at_once)
  try:
    with stops.polled():
      os.kill(os.getpid(), signal.SIGTERM)
      assert stops.requested() == signal.SIGTERM and not ended  # recorded, nothing raised mid-step
      with pytest.raises(Interrupted) as stopped:
        stops.check()
      assert stopped.value.signum == signal.SIGTERM and stops.requested() is None
      os.kill(os.getpid(), signal.SIGINT)
      with pytest.raises(SystemExit):  # a second Ctrl-C before the loop's next check: at once
        os.kill(os.getpid(), signal.SIGINT)
    assert ended == [signal.SIGINT]
    written = []
    with pytest.raises(SystemExit):  # outside the loops, after the write
      with stops.uninterrupted():
        os.kill(os.getpid(), signal.SIGINT)
        written.append("whole")
    assert written == ["whole"] and ended == [signal.SIGINT] * 2
  finally:
    stops.restore(previous)
  assert signal.getsignal(signal.SIGINT) is previous[0][signal.SIGINT]


def test_collect_interrupted_mid_run_resumes_to_a_valid_dataset(tmp_path, pong_q_agent_path, lock_dir):
  args = collect_args(pong_q_agent_path, tmp_path / "d")
  process = start(args, lock_dir)
  progress = tmp_path / "d.partial" / "progress.json"
  wait_for(lambda: progress.exists() and '"count": 0' not in progress.read_text(), process)
  last = assert_clean_interrupt(*stop(process, signal.SIGINT), signal.SIGINT)
  assert "finish it with the same command and --resume" in last
  assert main([*args, "--resume", "--quiet"]) == 0
  assert len(open_dataset(tmp_path / "d")) == 1024


def test_generator_training_interrupted_keeps_its_checkpoint_and_resumes(tmp_path, pong_q_agent_path, data, lock_dir):
  args = ["train-generator", "--config", "configs/generator_cpu.yaml", "--dataset", str(data), "--agent"]
  args += [str(pong_q_agent_path), "--out", str(tmp_path / "g"), *TINY_GENERATOR, "checkpoint_every=1"]
  process = start([*args, "total_steps=100000"], lock_dir)
  wait_for(lambda: (tmp_path / "g" / "curve.csv").exists() and (tmp_path / "g" / "checkpoints" / "3").exists(), process)
  last = assert_clean_interrupt(*stop(process, signal.SIGINT), signal.SIGINT)  # a checkpoint is written every step
  assert "continue with --resume" in last
  step = latest_checkpoint(tmp_path / "g")
  assert step >= 3
  assert main([*args, f"total_steps={step + 2}", "--resume", "--quiet"]) == 0
  assert (tmp_path / "g" / "generator" / "generator.json").exists()


def test_agent_training_stopped_by_sigterm_resumes(tmp_path, lock_dir):
  (tmp_path / "ppo.yaml").write_text(TINY_PPO + "total_steps: 100000\ncheckpoint_every: 64\n")
  args = ["train-agent", "--config", str(tmp_path / "ppo.yaml"), "--out", str(tmp_path / "a")]
  process = start(args, lock_dir)
  wait_for(lambda: (tmp_path / "a" / "checkpoints" / "64").exists(), process)
  assert_clean_interrupt(*stop(process, signal.SIGTERM), signal.SIGTERM)
  assert main([*args, "total_steps=192", "--resume", "--quiet"]) == 0
  assert load_agent(tmp_path / "a" / "agent").metadata["steps"] == 192


def test_probe_interrupted_leaves_no_folder(tmp_path, pong_q_agent, pong_q_agent_path, lock_dir):
  save_generator(tmp_path / "gen", tiny_generator(pong_q_agent))
  args = [
    "probe",
    "--agent",
    str(pong_q_agent_path),
    "--generator",
    str(tmp_path / "gen"),
    "--out",
    str(tmp_path / "p"),
  ]
  process = start([*args, "--num", "64", "--steps", "100000", "--chunk", "64"], lock_dir)
  time.sleep(8)  # imported, loaded and compiling or searching
  assert_clean_interrupt(*stop(process, signal.SIGINT), signal.SIGINT)
  assert not (tmp_path / "p").exists()


def long_command(name: str, tmp: Path, agent: Path, data: Path, generator: Path) -> list[str]:
  """A run of command `name` long enough to be stopped at any moment."""
  if name == "collect":
    return collect_args(agent, tmp / "d", frames=2048)
  if name == "train-agent":
    (tmp / "ppo.yaml").write_text(TINY_PPO + "checkpoint_every: 64\n")
    return ["train-agent", "--config", str(tmp / "ppo.yaml"), "--out", str(tmp / "a"), "total_steps=100000"]
  if name == "train-generator":
    args = ["train-generator", "--config", "configs/generator_cpu.yaml", "--dataset", str(data), "--agent"]
    return [*args, str(agent), "--out", str(tmp / "g"), *TINY_GENERATOR, "checkpoint_every=1", "total_steps=100000"]
  return ["probe", "--agent", str(agent), "--generator", str(generator), "--out", str(tmp / "p"), "--steps", "100000"]


@pytest.mark.parametrize("delay", [0.3, 2.0, 4.0])
@pytest.mark.parametrize("name", ["collect", "train-agent", "train-generator", "probe"])
def test_every_long_command_stopped_at_any_moment_goes_on(
  tmp_path, pong_q_agent, pong_q_agent_path, data, lock_dir, name, delay
):
  save_generator(tmp_path / "gen", tiny_generator(pong_q_agent))
  run = long_command(name, tmp_path, pong_q_agent_path, data, tmp_path / "gen")
  process = start(run, lock_dir)
  time.sleep(delay)  # importing, compiling, or in the loop (a checkpoint or a chunk written every few steps)
  assert_clean_interrupt(*stop(process, signal.SIGINT), signal.SIGINT)
  # Whatever the stop kept, the same command goes on from it (a short stretch of it, here).
  step = latest_checkpoint(tmp_path / "a") or latest_checkpoint(tmp_path / "g") or 0
  go_on = {
    "collect": run + (["--resume"] if (tmp_path / "d.partial").exists() else []),
    "train-agent": [*run, f"stop_after={step + 64}"] + (["--resume"] if step else []),
    "train-generator": [*run, f"total_steps={step + 2}"] + (["--resume"] if step else []),
    "probe": [*run[:-1], "1", "--num", "2"],
  }[name]
  assert main([*go_on, "--quiet"]) == 0
  if name == "collect":
    open_dataset(tmp_path / "d", verify=True)


def test_a_second_writer_is_refused_and_a_killed_holder_blocks_nothing(tmp_path, pong_q_agent_path, lock_dir, capsys):
  args = collect_args(pong_q_agent_path, tmp_path / "d")
  first = start(args, lock_dir)
  wait_for(lambda: (tmp_path / "d.partial").exists(), first)
  for second in (args, [*args, "--resume"]):
    assert main([*second, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'd'} is being written by another jaxprobe command (pid {first.pid} on " in err, err
  assert first.wait(timeout=120) == 0, first.communicate()
  open_dataset(tmp_path / "d", verify=True)  # the first writer's dataset is whole
  # A holder killed with SIGKILL leaves its partial collection, and no hold on it.
  killed = start([*args[:-1], str(tmp_path / "e")], lock_dir)
  wait_for(lambda: (tmp_path / "e.partial" / "progress.json").exists(), killed)
  killed.kill()
  killed.wait()
  assert main([*args[:-1], str(tmp_path / "e"), "--resume", "--quiet"]) == 0


def test_a_run_that_died_before_its_first_checkpoint_starts_again(tmp_path):
  from jaxprobe.generator.train import GeneratorConfig

  config = GeneratorConfig(total_steps=10)
  run = RunDir(tmp_path / "g", "generator", config, resume=False)
  run.log(dict(step=1, wall_time=0.1, loss=1.0))
  run.close()  # died here: config.yaml and a curve row, no checkpoint
  again = RunDir(tmp_path / "g", "generator", GeneratorConfig(total_steps=20), resume=False)
  assert again.latest_step() is None and not again.curve_file.exists()
  again.save(1, dict(x=np.zeros(2)), dict(step=1, wall_time=0.1))
  again.close()
  with pytest.raises(UserError, match="already holds a run; pass --resume"):  # once it has a checkpoint
    RunDir(tmp_path / "g", "generator", config, resume=False)


def test_a_failed_write_keeps_the_checkpoint_that_was_there(tmp_path, pong_q_agent, monkeypatch, capsys):
  import jaxprobe.bundle

  save_agent(tmp_path / "agent", pong_q_agent)
  other = Agent(pong_q_agent.spec, pong_q_agent.spec.init(jax.random.key(3)), {})

  def full_disk(directory, tree):
    directory.mkdir(parents=True)
    (directory / "half").write_bytes(b"x" * 100)
    raise OSError(errno.ENOSPC, "No space left on device", str(directory / "half"))

  monkeypatch.setattr(jaxprobe.bundle, "_save_tree", full_disk)
  with pytest.raises(OSError, match="No space left"):
    save_agent(tmp_path / "agent", other)
  kept = load_agent(tmp_path / "agent")  # verified against its checksum
  jax.tree.map(np.testing.assert_array_equal, kept.params, pong_q_agent.params)
  assert sorted(p.name for p in (tmp_path / "agent").iterdir()) == ["agent.json", "params"]

  # Through the command line, the same failure is one line naming the file, exit 2.
  def no_space(path, image):
    raise OSError(errno.ENOSPC, "No space left on device", str(path))

  monkeypatch.setattr("jaxprobe.commands.dataset_info.save_png", no_space)
  collect(pong_q_agent, tmp_path / "data", 16, num_envs=2, progress=False)
  assert main(["dataset", "info", str(tmp_path / "data"), "--sheet", str(tmp_path / "sheet.png")]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and f"cannot write {tmp_path / 'sheet.png'}: No space left on device" in err, err
