# jaxprobe sets its XLA:CPU flags on import, which must happen before JAX's backend starts
# (jaxprobe/__init__.py): import it before any test module runs a computation.
import jax
import pytest

import jaxprobe  # noqa: F401
from jaxprobe.agents import Agent, AgentSpec, save_agent
from jaxprobe.agents.checkpoint import load_agent


@pytest.fixture(scope="session")
def pong_q_agent_path(tmp_path_factory):
  """A random-weights Nature-CNN Q-network for Pong-v5 (Flax default init, seed 0).

  The shipped agents are a PPO actor-critic (Pong) and, for Q-value paths, tests need a Q agent
  of the same game that loads in milliseconds; its outputs are arbitrary but deterministic.
  """
  path = tmp_path_factory.mktemp("agents") / "pong-q-random"
  spec = AgentSpec("q", 6, "Pong-v5")
  save_agent(path, Agent(spec, spec.init(jax.random.key(0)), {"trained": False}))
  return path


@pytest.fixture(scope="session")
def pong_q_agent(pong_q_agent_path):
  """The agent saved at `pong_q_agent_path`, loaded once."""
  return load_agent(pong_q_agent_path)
