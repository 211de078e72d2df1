"""The command line: the saliency job end to end, help texts, and one-line errors for bad input."""

import json
import subprocess
import sys

import pytest
from PIL import Image

from jaxprobe.cli import main


def test_saliency_writes_frames_grid_and_json(tmp_path, pong_q_agent_path):
  out = tmp_path / "sal"
  assert (
    main(
      [
        "saliency",
        "--agent",
        str(pong_q_agent_path),
        "--frames",
        "5",
        "--warmup",
        "10",
        "--every",
        "2",
        "--out",
        str(out),
        "--quiet",
      ]
    )
    == 0
  )
  summary = json.loads((out / "saliency.json").read_text())
  assert len(summary["frames"]) == 5 and summary["env_id"] == "Pong-v5"
  assert [f["step"] for f in summary["frames"]] == [10, 12, 14, 16, 18]
  assert all(len(f["outputs"]["q"]) == 6 for f in summary["frames"])
  assert all(f["greedy_action"] == f["action_taken"] for f in summary["frames"])  # epsilon 0
  assert Image.open(out / "frame_004.png").size == (336, 336)
  assert Image.open(out / "grid.png").size[0] > 4 * 336


def run_cli(*args):
  return subprocess.run([sys.executable, "-m", "jaxprobe.cli", *args], capture_output=True, text=True, timeout=120)


def test_help_explains_every_option():
  result = run_cli("saliency", "--help")
  assert result.returncode == 0
  for flag in (
    "--agent",
    "--env",
    "--method",
    "--frames",
    "--out",
    "--output",
    "--warmup",
    "--every",
    "--epsilon",
    "--seed",
    "--quiet",
  ):
    assert flag in result.stdout
  assert "saliency" in run_cli("--help").stdout


def test_user_error_is_one_line_and_exit_2(tmp_path):
  result = run_cli("saliency", "--agent", str(tmp_path / "missing"), "--out", str(tmp_path / "o"))
  assert result.returncode == 2
  assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
  assert "no agent checkpoint" in result.stderr


@pytest.mark.parametrize(
  "make_args, message",
  [
    (lambda t, a: ["--agent", str(t / "x.cleanrl_model")], "not a readable CleanRL checkpoint"),
    (lambda t, a: ["--agent", str(a), "--env", "Pongg-v5"], "unknown env id 'Pongg-v5'; did you mean Pong-v5"),
    (lambda t, a: ["--agent", str(a), "--env", "Seaquest-v5"], "the agent has 6 actions but Seaquest-v5 has 18"),
    (lambda t, a: ["--agent", str(a), "--method", "lime"], "unknown saliency method 'lime'; known: guided"),
    (lambda t, a: ["--agent", str(a), "--output", "value"], "has outputs q, not 'value'"),
    (lambda t, a: ["--agent", str(a), "--frames", "0"], "--frames: must be an integer >= 1"),
    (lambda t, a: ["--agent", str(a), "--out", str(t / "file.txt")], "is a file"),
  ],
)
def test_bad_inputs(tmp_path, capsys, pong_q_agent_path, make_args, message):
  (tmp_path / "x.cleanrl_model").write_bytes(b"\x93garbage")
  (tmp_path / "file.txt").write_text("keep me")
  args = ["saliency", "--out", str(tmp_path / "out"), "--quiet", "--frames", "2", "--warmup", "1"]
  code = main(args + make_args(tmp_path, pong_q_agent_path))
  err = capsys.readouterr().err
  assert code == 2, err
  assert message in err and err.strip().count("\n") == 0
  assert (tmp_path / "file.txt").read_text() == "keep me"
