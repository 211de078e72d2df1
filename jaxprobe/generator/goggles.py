"""Generator goggles (the paper's Table 1): the agent plays the real game seeing only G(E(x)).

Its score against its own score on the same games measures how much of what the
agent needs the generator keeps.
"""
from __future__ import annotations

import jax
import numpy as np

from jaxprobe.agents.agent import Agent
from jaxprobe.agents.evaluate import evaluate
from jaxprobe.errors import UserError
from jaxprobe.agents.checkpoint import fingerprint
from jaxprobe.generator.checkpoint import GeneratorBundle
from jaxprobe.generator.networks import to_agent_view


def check_generator_fits(generator: GeneratorBundle, agent: Agent) -> None:
  if generator.spec.agent_fingerprint != fingerprint(agent.params):
    raise UserError(f"the generator was trained for another agent (fingerprint {generator.spec.agent_fingerprint}, "
                    f"this agent's is {fingerprint(agent.params)}); use the agent it was trained with")


def reconstruct_fn(generator: GeneratorBundle):
  """colour stacks (N, 84, 84, 12) uint8 -> the agent's view of G(E(x)), (N, 4, 84, 84) in [0, 255]."""
  network = generator.spec.network()

  @jax.jit
  def reconstruct(variables, colour):
    out = network.apply(variables, colour.astype(np.float32) / 255.0, train=False)
    return to_agent_view(out["colour"])

  return lambda colour: reconstruct(generator.variables, colour)


def goggles(agent: Agent, generator: GeneratorBundle, episodes: int, env_id: str | None = None,
            epsilon: float = 0.01, seed: int = 0, progress: bool = True) -> dict:
  """The agent's score with and without goggles on the same games (same seeds)."""
  check_generator_fits(generator, agent)
  own = evaluate(agent, episodes, env_id, epsilon, seed, progress=progress).summary()
  seen = evaluate(agent, episodes, env_id, epsilon, seed, progress=progress,
                  observe=reconstruct_fn(generator)).summary()
  return dict(agent=own, goggles=seen, env_id=env_id or agent.spec.env_id, epsilon=epsilon, seed=seed,
              generator=generator.metadata.get("ablation", "?"))
