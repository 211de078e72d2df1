"""Evaluation of found states against real play: novelty and retrieval, pixel gauges, rollout evidence."""
