"""The generator's loss and training step: each term against its formula, the ablations, what gets gradients."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxprobe.agents import AgentSpec
from jaxprobe.generator import losses
from jaxprobe.generator.train import GeneratorConfig, generator_spec, init_state, make_loss, make_train_step


class TinyAgent:  # the fields of an Agent that the loss reads
  spec = AgentSpec("q", 6, "Pong-v5")
  params = spec.init(jax.random.key(0))


AGENT = TinyAgent()
CONFIG = GeneratorConfig(latent_dim=8, widths=(4, 8, 8, 8), batch_size=4, lr=1e-3)


def batch(seed=0, n=4):
  rng = np.random.default_rng(seed)
  colour = rng.integers(0, 256, (n, 84, 84, 12), dtype=np.uint8)
  gray = rng.integers(0, 256, (n, 4, 84, 84), dtype=np.uint8)
  return dict(colour=colour, mask=rng.random((n, 84, 84), dtype=np.float32),
              q=np.asarray(AGENT.spec.apply(AGENT.params, gray)["q"]))


def network_and_state(config):
  spec = generator_spec(config, AGENT)
  return spec.network(), init_state(spec, config, optax.adam(config.lr))


def test_loss_terms_equal_their_formulas():
  rng = np.random.default_rng(1)
  x, y = rng.random((3, 84, 84, 12)), rng.random((3, 84, 84, 12))
  m = rng.random((3, 84, 84))
  expected = ((1 + 4.0 * m[..., None]) * (x - y) ** 2).reshape(3, -1).sum(1)
  np.testing.assert_allclose(losses.reconstruction(x, y, m, 4.0), expected, rtol=1e-5)
  a, b = rng.normal(size=(3, 6)), rng.normal(size=(3, 6))
  np.testing.assert_allclose(losses.perception(a, b), ((a - b) ** 2).sum(1), rtol=1e-5)
  mean, logvar = rng.normal(size=(3, 8)), rng.normal(size=(3, 8))
  var = np.exp(logvar)  # KL(N(m, v) || N(0, 1)) per dimension: (v + m^2 - 1 - log v) / 2
  np.testing.assert_allclose(losses.kl_to_standard_normal(mean, logvar),
                             0.5 * (var + mean**2 - 1 - logvar).sum(1), rtol=1e-5)


def test_vae_ablation_is_a_plain_vae_loss():
  config = dataclasses.replace(CONFIG, ablation="vae")
  network, state = network_and_state(config)
  b, key = batch(), jax.random.key(3)
  total, (_, terms) = make_loss(network, AGENT, config)(state.params, state.batch_stats, AGENT.params, b, key)
  # Independently: the same forward pass, then summed squared error + lambda * KL, batch mean.
  real = b["colour"].astype(np.float32) / 255.0
  out, _ = network.apply({"params": state.params, "batch_stats": state.batch_stats}, real, train=True,
                         rngs={"latent": key}, mutable=["batch_stats"])
  sse = ((real - np.asarray(out["colour"])) ** 2).reshape(len(real), -1).sum(1)
  mean, logvar = np.asarray(out["mean"], np.float64), np.asarray(out["logvar"], np.float64)
  kl = 0.5 * (np.exp(logvar) + mean**2 - 1 - logvar).sum(1)
  np.testing.assert_allclose(total, np.mean(sse + config.lam * kl), rtol=1e-4)
  assert float(terms["L_a"]) == 0.0
  # Neither the saliency mask nor the agent enters a plain VAE's loss.
  other = dict(b, mask=np.zeros_like(b["mask"]), q=b["q"] + 100.0)
  total2, _ = make_loss(network, AGENT, config)(state.params, state.batch_stats, AGENT.params, other, key)
  np.testing.assert_allclose(total2, total, rtol=1e-6)


def test_mask_and_agent_are_constants_for_the_generator():
  network, state = network_and_state(CONFIG)
  loss = make_loss(network, AGENT, CONFIG)
  b = {k: jnp.asarray(v, jnp.float32) if k != "colour" else v for k, v in batch().items()}
  g_mask, g_agent, g_target = jax.grad(
      lambda m, p, q: loss(state.params, state.batch_stats, p, dict(b, mask=m, q=q), jax.random.key(0))[0],
      argnums=(0, 1, 2))(b["mask"], AGENT.params, b["q"])
  for g in (g_mask, g_target, *jax.tree.leaves(g_agent)):
    assert not np.any(np.asarray(g)), "a constant of the generator's loss received a gradient"
  # ...while the mask does weight the loss, and the generator's params do get gradients.
  heavier = loss(state.params, state.batch_stats, AGENT.params, dict(b, mask=b["mask"] + 1), jax.random.key(0))[0]
  assert heavier > loss(state.params, state.batch_stats, AGENT.params, b, jax.random.key(0))[0]


@pytest.mark.parametrize("ablation", ["full", "vae"])
def test_train_step_lowers_the_loss_on_a_fixed_batch(ablation):
  config = dataclasses.replace(CONFIG, ablation=ablation)
  network, state = network_and_state(config)
  step = jax.jit(make_train_step(network, AGENT, config, optax.adam(config.lr)))
  b = batch()
  losses_seen = []
  for _ in range(15):
    state, metrics = step(state, AGENT.params, b)
    losses_seen.append(float(metrics["loss"]))
  assert np.all(np.isfinite(losses_seen)) and losses_seen[-1] < 0.9 * losses_seen[0], losses_seen
  assert int(state.step) == 15
