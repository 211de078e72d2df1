"""The PyTorch ports the benchmarks compare against compute what our Flax networks compute.

The benchmark ratios mean something only if both sides run the same function on the same
weights: the loaders in benchmarks/torch_models.py convert kernel layouts, flip transposed
kernels and permute the dense weights next to flattens, and a slip in any of them still
runs, just on a different network.
"""

import sys
from pathlib import Path

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import search_setup  # noqa: E402
import torch_models  # noqa: E402

from jaxprobe.agents.agent import AgentSpec  # noqa: E402
from jaxprobe.generator.autoencoder import to_agent_view  # noqa: E402
from jaxprobe.generator.spec import GeneratorSpec  # noqa: E402


def _close(ours, theirs, rtol=1e-4):
  ours, theirs = np.asarray(ours), theirs.detach().numpy()
  assert ours.shape == theirs.shape
  assert np.max(np.abs(ours - theirs)) <= rtol * np.max(np.abs(ours))


def test_nature_port_matches_qnetwork():
  spec = AgentSpec("q", 6, "Pong-v5")
  # Random weights in the init's shapes: Flax's own init compiles for ~20 s on 2 cores.
  params = search_setup.random_like(jax.eval_shape(spec.init, jax.random.key(0)), 0)
  obs = search_setup.observations(3)
  net = torch_models.nature_from_flax(params, 6)
  with torch.no_grad():
    _close(spec.apply(params, obs)["q"], net(torch.from_numpy(obs)))


def test_generator_port_matches_flax_transpose_layout():
  spec = GeneratorSpec(upsample="transpose")
  network = spec.network()
  rng = np.random.default_rng(1)
  # Random batch statistics too, so the eval-mode batch norms are checked.
  variables = search_setup.random_like(jax.eval_shape(spec.init, jax.random.key(1)), 1)
  colour = rng.random((2, 84, 84, 12), np.float32)
  gen = torch_models.generator_from_flax(variables).eval()
  z = rng.standard_normal((2, 100)).astype(np.float32)
  with torch.no_grad():
    mean, logvar = network.apply(variables, colour, method="encode")
    t_mean, t_logvar = gen.encode(torch_models.nhwc_to_nchw(colour))
    _close(mean, t_mean)
    _close(logvar, t_logvar)
    ours = network.apply(variables, z, method="decode")
    theirs = gen.decode(torch.from_numpy(z))
    _close(np.asarray(ours).transpose(0, 3, 1, 2), theirs)
    _close(to_agent_view(colour), gen.agent_view(torch_models.nhwc_to_nchw(colour)))
