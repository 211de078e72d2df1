"""Saliency methods against independent numpy computations on tiny networks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprobe import saliency
from jaxprobe.agents.agent import AgentSpec


class TinyAgent:
  """x -> relu(W1 x + b1) -> relu(W2 h + b2) -> W3 h: small enough to differentiate by hand."""

  action_head = "q"
  heads = ("q",)

  def apply(self, params, obs, activation=jax.nn.relu):
    x = obs.reshape(obs.shape[0], -1).astype(jnp.float32)
    h1 = activation(x @ params["W1"].T + params["b1"])
    h2 = activation(h1 @ params["W2"].T + params["b2"])
    return {"q": h2 @ params["W3"].T}


def tiny_params(seed=0, shift=0.0):
  rng = np.random.default_rng(seed)
  return {
    "W1": rng.normal(size=(6, 8)).astype(np.float32),
    "b1": (rng.normal(size=6) + shift).astype(np.float32),
    "W2": rng.normal(size=(5, 6)).astype(np.float32),
    "b2": (rng.normal(size=5) + shift).astype(np.float32),
    "W3": rng.normal(size=(3, 5)).astype(np.float32),
  }


def numpy_guided(p, x, a):
  z1 = p["W1"] @ x + p["b1"]
  z2 = p["W2"] @ np.maximum(z1, 0) + p["b2"]
  g2 = (z2 > 0) * np.maximum(p["W3"][a], 0)
  g1 = (z1 > 0) * np.maximum(p["W2"].T @ g2, 0)
  return p["W1"].T @ g1


def numpy_gradient(p, x, a):
  z1 = p["W1"] @ x + p["b1"]
  z2 = p["W2"] @ np.maximum(z1, 0) + p["b2"]
  return p["W1"].T @ ((z1 > 0) * (p["W2"].T @ ((z2 > 0) * p["W3"][a])))


def test_guided_backprop_equals_hand_formula():
  p, agent = tiny_params(), TinyAgent()
  obs = np.random.default_rng(1).normal(size=(4, 2, 2, 2)).astype(np.float32)
  actions = np.array([0, 1, 2, 1])
  got = np.asarray(saliency.guided_backprop(agent, p, obs, action=actions))
  for i in range(4):
    want = numpy_guided(p, obs[i].ravel(), actions[i]).reshape(2, 2, 2)
    np.testing.assert_allclose(got[i], want, rtol=1e-5, atol=1e-6)
  # The guided rule really differs from the plain gradient here (else the test proves nothing).
  assert not np.allclose(got, np.asarray(saliency.gradient(agent, p, obs, action=actions)), atol=1e-3)


def test_plain_gradient_equals_hand_formula():
  p, agent = tiny_params(3), TinyAgent()
  obs = np.random.default_rng(2).normal(size=(3, 8)).astype(np.float32)
  got = np.asarray(saliency.gradient(agent, p, obs, action=1))
  for i in range(3):
    np.testing.assert_allclose(got[i], numpy_gradient(p, obs[i], 1), rtol=1e-5, atol=1e-6)


def test_guided_equals_gradient_when_everything_is_positive():
  # Positive weights and inputs: every pre-activation and every backward signal is positive.
  p = {k: np.abs(v) + 0.1 for k, v in tiny_params(4).items()}
  obs = np.abs(np.random.default_rng(5).normal(size=(4, 8))).astype(np.float32)
  agent = TinyAgent()
  np.testing.assert_allclose(
    saliency.guided_backprop(agent, p, obs, action=2), saliency.gradient(agent, p, obs, action=2), rtol=1e-6
  )


def test_default_action_is_greedy():
  p, agent = tiny_params(6), TinyAgent()
  obs = np.random.default_rng(7).normal(size=(5, 8)).astype(np.float32)
  greedy = np.argmax(agent.apply(p, obs)["q"], axis=-1)
  np.testing.assert_allclose(saliency.gradient(agent, p, obs), saliency.gradient(agent, p, obs, action=greedy))


@pytest.fixture(scope="module")
def nature_agent():
  spec = AgentSpec("actor_critic", 6, "Pong-v5")
  params = spec.init(jax.random.key(0))
  obs = jax.random.randint(jax.random.key(1), (2, 4, 84, 84), 0, 256).astype(jnp.uint8)
  return spec, params, obs


@pytest.mark.parametrize("head", ["logits", "value"])
def test_integrated_gradients_completeness(nature_agent, head):
  spec, params, obs = nature_agent
  attributions = saliency.integrated_gradients(spec, params, obs, head=head, num_steps=64)
  outputs = spec.apply(params, obs)
  zero = spec.apply(params, jnp.zeros_like(obs))
  action = jnp.argmax(outputs["logits"], -1)
  f = saliency.explained_output(spec, outputs, head, action)
  f0 = saliency.explained_output(spec, zero, head, action)
  np.testing.assert_allclose(attributions.reshape(2, -1).sum(1), f - f0, rtol=2e-2, atol=1e-4)


def test_smoothgrad_without_noise_is_the_gradient(nature_agent):
  spec, params, obs = nature_agent
  smooth = jax.jit(lambda p, o: saliency.smoothgrad(spec, p, o, jax.random.key(0), num_samples=2, noise_scale=0.0))
  np.testing.assert_allclose(smooth(params, obs), saliency.gradient(spec, params, obs), rtol=1e-5, atol=1e-9)


class TopRowsAgent:
  """Reads only the top 20 rows of the frame: perturbing anywhere else changes nothing."""

  action_head = "q"

  def apply(self, params, obs, activation=jax.nn.relu):
    top = obs[:, :, :20, :].astype(jnp.float32)
    return {"q": jnp.stack([(top * params).sum((1, 2, 3)), top.sum((1, 2, 3))], -1) / 1e4}


def test_perturbation_is_zero_where_the_output_looks_away():
  params = jax.random.normal(jax.random.key(0), (4, 20, 84))
  obs = jax.random.randint(jax.random.key(1), (2, 4, 84, 84), 0, 256).astype(jnp.float32)
  heat = np.asarray(jax.jit(lambda p, o: saliency.perturbation(TopRowsAgent(), p, o, action=0))(params, obs))
  assert heat.shape == obs.shape
  assert heat[:, :, :20].max() > 0
  # Masks are Gaussians of sigma 5: beyond ~8 sigma of row 19 their effect is below float precision.
  assert np.abs(heat[:, :, 60:]).max() <= 1e-6 * heat.max()


def test_perturbation_score_matches_direct_computation():
  agent, params = TopRowsAgent(), jax.random.normal(jax.random.key(2), (4, 20, 84))
  x = jax.random.randint(jax.random.key(3), (1, 4, 84, 84), 0, 256).astype(jnp.float32)
  m = saliency.perturbation_masks(84, 5, 5.0)[1, 3]
  f = lambda v: agent.apply(params, v)["q"][0, 0]
  want = 0.5 * (f(x) - f(x * (1 - m) + saliency.gaussian_blur(x, 3.0) * m)) ** 2
  scores = jax.jit(lambda p, o: saliency.perturbation_scores(agent, p, o, action=0))(params, x)
  assert scores.shape == (1, 17, 17)
  np.testing.assert_allclose(scores[0, 1, 3], want, rtol=1e-4)


def test_box_blur_and_mask_against_numpy():
  rng = np.random.default_rng(0)
  maps = rng.normal(size=(2, 4, 9, 9)).astype(np.float32)
  padded = np.pad(np.abs(maps).sum(1), ((0, 0), (2, 2), (2, 2)))
  blurred = np.stack([[[padded[n, i : i + 5, j : j + 5].mean() for j in range(9)] for i in range(9)] for n in range(2)])
  want = blurred / blurred.reshape(2, -1).max(1)[:, None, None]
  mask = np.asarray(saliency.saliency_mask(maps, blur_size=5))
  np.testing.assert_allclose(mask, want, rtol=1e-5)
  assert mask.reshape(2, -1).max(1) == pytest.approx([1.0, 1.0])
  assert mask.min() >= 0


def test_methods_run_jitted_on_the_nature_network(nature_agent):
  spec, params, obs = nature_agent
  for method in saliency.METHODS:
    f = jax.jit(lambda p, o, m=method: saliency.compute(m, spec, p, o, key=jax.random.key(0)))
    out = f(params, obs)
    assert out.shape == obs.shape and bool(jnp.all(jnp.isfinite(out))), method
  with pytest.raises(ValueError, match="unknown saliency method"):
    saliency.compute("lime", spec, params, obs)
