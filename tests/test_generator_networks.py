"""The generator network: shapes, ranges, batch statistics, sampling and the agent's view."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxprobe.generator.autoencoder import GRAY_WEIGHTS, Generator, to_agent_view

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
  shapes = {
    u: jax.eval_shape(Generator(upsample=u).init, jax.random.PRNGKey(0), x)["params"]["dec_ups_3"]["kernel"].shape
    for u in ("transpose", "subpixel")
  }
  assert shapes == {"transpose": (4, 4, 32, 12), "subpixel": (3, 3, 32, 48)}
  with pytest.raises(ValueError):
    Generator(upsample="nearest").init(jax.random.PRNGKey(0), x)


def test_training_updates_batch_stats_and_samples(model, colour):
  gen, variables = model
  out, updates = gen.apply(
    variables, colour, train=True, rngs={"latent": jax.random.PRNGKey(1)}, mutable=["batch_stats"]
  )
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


def full_decode(params, batch_stats, z, upsample, train):
  """The decoder written plainly: every layer on its whole map, batch norm, crop at the end."""
  dn = ("NHWC", "HWIO", "NHWC")
  x = jax.nn.relu(z @ params["dec_dense"]["kernel"] + params["dec_dense"]["bias"]).reshape(len(z), 8, 8, -1)
  for i in range(4):
    p = params[f"dec_ups_{i}"]
    if upsample == "transpose":
      x = lax.conv_transpose(x, p["kernel"], (2, 2), "SAME", dimension_numbers=dn, precision="highest") + p["bias"]
    else:
      y = (
        lax.conv_general_dilated(x, p["kernel"], (1, 1), "SAME", dimension_numbers=dn, precision="highest") + p["bias"]
      )
      n, h, w, c = y.shape
      x = y.reshape(n, h, w, 2, 2, c // 4).transpose(0, 1, 3, 2, 4, 5).reshape(n, 2 * h, 2 * w, c // 4)
    if i < 3:
      stats = batch_stats[f"dec_norms_{i}"]
      mean, var = (x.mean((0, 1, 2)), x.var((0, 1, 2))) if train else (stats["mean"], stats["var"])
      norm = params[f"dec_norms_{i}"]
      x = jax.nn.relu((x - mean) / jnp.sqrt(var + 1e-5) * norm["scale"] + norm["bias"])
  return jax.nn.sigmoid(x)[:, 22:106, 22:106]


@pytest.mark.parametrize("train", [False, True])
def test_decoder_computes_only_the_crop_but_equals_the_whole_decoder(model, train):
  # The decoder skips the pixels the crop drops (all layers when batch norm uses running
  # statistics, the last one in training): the result must be the full decoder's crop.
  gen, variables = model
  stats = jax.tree.map(lambda s: s + 0.5, variables["batch_stats"])  # not the init's 0 / 1
  z = jnp.asarray(np.random.RandomState(2).standard_normal((N, 100)), jnp.float32)
  decode = lambda p, z: gen.apply(
    {"params": p, "batch_stats": stats}, z, train, method=gen.decode, mutable=["batch_stats"] if train else False
  )
  ours = decode(variables["params"], z)
  ours = ours[0] if train else ours
  expected = full_decode(variables["params"], stats, z, gen.upsample, train)
  np.testing.assert_allclose(ours, expected, atol=1e-5)
  probe = jnp.asarray(np.random.RandomState(3).standard_normal(expected.shape), jnp.float32)
  out = lambda p, z: decode(p, z)[0] if train else decode(p, z)
  grads = jax.grad(lambda p, z: jnp.sum(out(p, z) * probe), (0, 1))(variables["params"], z)
  expected_grads = jax.grad(lambda p, z: jnp.sum(full_decode(p, stats, z, gen.upsample, train) * probe), (0, 1))(
    variables["params"], z
  )
  before_norm = {f"['dec_ups_{i}']['bias']" for i in range(3)} if train else set()
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(grads), jax.tree.leaves(expected_grads)):
    name = jax.tree_util.keystr(path[1:])
    if name not in before_norm:  # a bias before batch norm has no gradient: both sides are rounding noise
      np.testing.assert_allclose(a, b, atol=2e-4 * float(jnp.max(jnp.abs(b))) + 1e-6, err_msg=name)


def test_to_agent_view_is_the_weighted_sum():
  x = jnp.asarray(np.random.RandomState(1).rand(3, 84, 84, 12), jnp.float32)
  expected = np.stack(
    [255.0 * sum(w * np.asarray(x)[..., 3 * f + c] for c, w in enumerate(GRAY_WEIGHTS)) for f in range(4)], axis=1
  )
  np.testing.assert_allclose(to_agent_view(x), expected, rtol=1e-5)
  assert float(to_agent_view(jnp.ones((1, 84, 84, 12))).min()) == pytest.approx(255.0, rel=1e-6)
