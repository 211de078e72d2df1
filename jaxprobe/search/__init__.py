"""Latent search: targets (energies over the agent's outputs), the optimiser, and the search spaces.

from jaxprobe.search import ProbeConfig, probe
results = probe(agent, generator, ["T-", "T+"], ProbeConfig(num=256, steps=200))
"""

from jaxprobe.search.spaces import ProbeConfig, ProbeResult, probe

__all__ = ["ProbeConfig", "ProbeResult", "probe"]
