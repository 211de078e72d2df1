"""Agents: networks, the AgentSpec interface, checkpoints, importers, play."""

from jaxprobe.agents.agent import Agent, AgentSpec, act, greedy_actions
from jaxprobe.agents.checkpoint import load_agent, save_agent

__all__ = ["Agent", "AgentSpec", "act", "greedy_actions", "load_agent", "save_agent"]
