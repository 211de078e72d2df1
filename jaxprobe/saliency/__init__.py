"""Saliency: what an agent's output depends on in its input frames (docs/saliency.md).

from jaxprobe import saliency
maps = saliency.guided_backprop(agent.spec, agent.params, obs)   # the shape of obs
"""

from jaxprobe.saliency.methods import (
  METHODS,
  box_blur,
  compute,
  explained_output,
  gaussian_blur,
  gradient,
  guided_backprop,
  guided_relu,
  integrated_gradients,
  normalise_per_state,
  perturbation,
  perturbation_masks,
  perturbation_scores,
  saliency_mask,
  smoothgrad,
)

__all__ = [
  "METHODS",
  "box_blur",
  "compute",
  "explained_output",
  "gaussian_blur",
  "gradient",
  "guided_backprop",
  "guided_relu",
  "integrated_gradients",
  "normalise_per_state",
  "perturbation",
  "perturbation_masks",
  "perturbation_scores",
  "saliency_mask",
  "smoothgrad",
]
