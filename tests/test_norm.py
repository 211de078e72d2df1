"""jaxprobe.norm.BatchNorm is nn.BatchNorm: same variables, outputs, statistics and gradients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprobe.norm import BatchNorm, channel_sums


def random(shape, seed=0, scale=1.0, shift=0.0):
  return jnp.asarray(shift + scale * np.random.RandomState(seed).standard_normal(shape), jnp.float32)


@pytest.mark.parametrize("shape", [(2, 5, 3, 7), (4, 8, 8, 32), (3, 11)])
def test_channel_sums(shape):
  x = random(shape)
  np.testing.assert_allclose(
    channel_sums(x), np.asarray(x, np.float64).reshape(-1, shape[-1]).sum(0), rtol=1e-5, atol=1e-4
  )


@pytest.mark.parametrize("train", [True, False])
def test_batch_norm_matches_flax(train):
  x = random((4, 6, 6, 32), scale=3.0, shift=1.0)
  ref, ours = nn.BatchNorm(momentum=0.9, epsilon=1e-5), BatchNorm(momentum=0.9, epsilon=1e-5)
  variables = ref.init(jax.random.PRNGKey(0), x, use_running_average=False)
  # Same variables at init (names, shapes, values), so checkpoints move between the two.
  jax.tree.map(np.testing.assert_array_equal, ours.init(jax.random.PRNGKey(0), x, use_running_average=False), variables)
  # Perturbed variables, so no statistic or parameter is at its initial value.
  leaves, tree = jax.tree.flatten(variables)
  variables = jax.tree.unflatten(tree, [v + 0.3 * jnp.abs(random(v.shape, seed=i + 1)) for i, v in enumerate(leaves)])
  probe = random(x.shape, seed=9)

  def loss(module, variables, x):
    y, updated = module.apply(variables, x, use_running_average=not train, mutable=["batch_stats"])
    return jnp.sum(y * probe) + jnp.sum(jnp.sin(y)), (y, updated)

  expected = jax.value_and_grad(loss, (1, 2), has_aux=True)(ref, variables, x)
  actual = jax.jit(jax.value_and_grad(loss, (1, 2), has_aux=True), static_argnums=0)(ours, variables, x)
  for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
    np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(e))))
