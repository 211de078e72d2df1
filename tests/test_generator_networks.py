"""The generator network: shapes, ranges, batch statistics, sampling and the agent's view."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprobe.generator.networks import GRAY_WEIGHTS, Generator, to_agent_view

N = 2


@pytest.fixture(scope="module")
def colour():
  return jnp.asarray(np.random.RandomState(0).rand(N, 84, 84, 12), jnp.float32)


@pytest.fixture(scope="module", params=["transpose", "subpixel"])
def model(request, colour):
  gen = Generator(upsample=request.param, conv_impl="fast")
  return gen, jax.jit(gen.init)(jax.random.PRNGKey(0), colour)


def test_output_shapes_and_ranges(model, colour):
  gen, variables = model
  out = gen.apply(variables, colour)
  assert out["mean"].shape == out["logvar"].shape == out["z"].shape == (N, 100)
  assert out["colour"].shape == (N, 84, 84, 12)
  assert out["agent_view"].shape == (N, 4, 84, 84)
  assert 0.0 <= float(out["colour"].min()) and float(out["colour"].max()) <= 1.0
  assert 0.0 <= float(out["agent_view"].min()) and float(out["agent_view"].max()) <= 255.0
  np.testing.assert_array_equal(out["z"], out["mean"])  # no sampling outside training
  np.testing.assert_allclose(out["agent_view"], to_agent_view(out["colour"]), rtol=1e-6)


def test_encoder_and_decoder_layout(model):
  _, variables = model
  params = variables["params"]
  assert params["mean"]["kernel"].shape == (5 * 5 * 256, 100)  # 84 -> 42 -> 21 -> 10 -> 5
  assert params["dec_dense"]["kernel"].shape == (100, 8 * 8 * 256)
  assert set(variables["batch_stats"]) == {f"enc_norms_{i}" for i in range(4)} | {f"dec_norms_{i}" for i in range(3)}


def test_upsample_layouts():
  x = jnp.zeros((1, 84, 84, 12))
  shapes = {u: jax.eval_shape(Generator(upsample=u).init, jax.random.PRNGKey(0), x)["params"]["dec_ups_3"]["kernel"].shape
            for u in ("transpose", "subpixel")}
  assert shapes == {"transpose": (4, 4, 32, 12), "subpixel": (3, 3, 32, 48)}
  with pytest.raises(ValueError):
    Generator(upsample="nearest").init(jax.random.PRNGKey(0), x)


def test_training_updates_batch_stats_and_samples(model, colour):
  gen, variables = model
  out, updates = gen.apply(variables, colour, train=True, rngs={"latent": jax.random.PRNGKey(1)},
                           mutable=["batch_stats"])
  assert not jnp.allclose(out["z"], out["mean"])
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), updates["batch_stats"], variables["batch_stats"])
  assert all(jax.tree.leaves(changed))


def test_fast_and_xla_generators_agree(model, colour):
  gen, variables = model
  colour = colour[:1]  # XLA's own transposed-convolution gradients are slow on CPU
  xla = Generator(upsample=gen.upsample, conv_impl="xla")

  def loss(g, params):
    out = g.apply({**variables, "params": params}, colour)
    return jnp.mean(out["agent_view"] ** 2), out["colour"]

  grads = lambda g: jax.jit(jax.value_and_grad(lambda p: loss(g, p), has_aux=True))(variables["params"])
  (_, c_fast), g_fast = grads(gen)
  (_, c_xla), g_xla = grads(xla)
  np.testing.assert_allclose(c_fast, c_xla, atol=1e-5)
  for a, b in zip(jax.tree.leaves(g_fast), jax.tree.leaves(g_xla)):
    np.testing.assert_allclose(a, b, atol=1e-4 * float(jnp.max(jnp.abs(b))) + 1e-7)


def test_to_agent_view_is_the_weighted_sum():
  x = jnp.asarray(np.random.RandomState(1).rand(3, 84, 84, 12), jnp.float32)
  expected = np.stack([255.0 * sum(w * np.asarray(x)[..., 3 * f + c] for c, w in enumerate(GRAY_WEIGHTS))
                       for f in range(4)], axis=1)
  np.testing.assert_allclose(to_agent_view(x), expected, rtol=1e-5)
  assert float(to_agent_view(jnp.ones((1, 84, 84, 12))).min()) == pytest.approx(255.0, rel=1e-6)
