"""The envpool factory: the agent's view, the colour view, and unknown ids."""

import numpy as np
import pytest

from jaxprobe.envs import check_env_id, make_atari
from jaxprobe.errors import UserError


def test_grayscale_and_colour_views_of_the_same_game():
  gray = make_atari("Pong-v5", num_envs=2, seed=3)
  colour = make_atari("Pong-v5", num_envs=2, seed=3, colour=True)
  g, _ = gray.reset()
  c, _ = colour.reset()
  assert g.shape == (2, 4, 84, 84) and g.dtype == np.uint8
  assert c.shape == (2, 12, 84, 84) and c.dtype == np.uint8
  for _ in range(5):
    g, *_ = gray.step(np.ones(2, np.int32))
    c, *_ = colour.step(np.ones(2, np.int32))
  # Same seed, same actions: the colour stack's luminance tracks the grayscale stack.
  lum = c.reshape(2, 4, 3, 84, 84).astype(np.float32).transpose(0, 1, 3, 4, 2) @ np.array([0.299, 0.587, 0.114])
  assert np.abs(lum - g).max() <= 20


@pytest.mark.parametrize("bad, hint", [("pong", "Pong-v5"), ("Seaquest-v4", "Seaquest-v5"), ("NotAGame", "look like")])
def test_unknown_ids_suggest_close_matches(bad, hint):
  with pytest.raises(UserError, match=f"unknown env id '{bad}'.*{hint}"):
    check_env_id(bad)
  with pytest.raises(UserError):
    make_atari(bad)


def test_machines_without_the_emulator_load_agents_and_search(pong_q_agent_path):
  # A GPU or TPU host may have no envpool: agents load and outputs compute there; only what needs
  # the emulator says so in one line.
  import subprocess
  import sys
  import textwrap

  script = textwrap.dedent(f"""
      import sys
      sys.modules["envpool"] = None  # makes `import envpool` fail, as on a machine without it
      import numpy as np
      from jaxprobe.agents.checkpoint import load_agent
      from jaxprobe.cli import main
      agent = load_agent({str(pong_q_agent_path)!r})
      print(agent.spec.apply(agent.params, np.zeros((2, 4, 84, 84), np.uint8))["q"].shape)
      sys.exit(main(["evaluate-agent", "--agent", {str(pong_q_agent_path)!r}, "--episodes", "1", "--quiet"]))
  """)
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
  assert "(2, 6)" in result.stdout and result.returncode == 2, result.stderr[-2000:]
  assert result.stderr.strip().count("\n") == 0 and "envpool does not import" in result.stderr
