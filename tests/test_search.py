"""Targets against the formulas of docs/search.md; the optimiser's drivers, early stop, sharding and errors."""

import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprobe.errors import UserError
from jaxprobe.search import diversity, targets
from jaxprobe.search.optimise import NonFiniteEnergy, OptimiseConfig, optimise

Q = np.array([[1.0, 2.0, -0.5, 4.0], [0.0, 0.0, 0.0, 0.0], [-3.0, 5.0, 2.0, 1.0]], np.float32)


def np_softmax_tau(q, tau):
  w = np.exp(q / tau)
  return (q * w).sum() / w.sum()


def np_softmin_tau(q, tau):
  w = np.exp(-q / tau)
  return (q * w).sum() / w.sum()


@pytest.mark.parametrize("tau", [0.3, 1.0, 5.0])
def test_q_targets_equal_the_formulas(tau):
  want = {
    "T+": lambda q: -np_softmin_tau(q, tau),
    "T-": lambda q: np_softmax_tau(q, tau),
    "T+-": lambda q: np_softmin_tau(q, tau) - np_softmax_tau(q, tau),
    "S+": lambda q: -q.mean(),
    "S-": lambda q: q.mean(),
    "S+-": lambda q: -q.std(),
    "action:3": lambda q: -(q[3] - tau * np.log(np.exp(q / tau).sum())),
    "not-action:0": lambda q: q[0] - tau * np.log(np.exp(q / tau).sum()),
  }
  for name, formula in want.items():
    t = targets.get_target(name, "q", 4, tau)
    got = jax.vmap(lambda q: t.energy({"q": q}))(jnp.asarray(Q))
    np.testing.assert_allclose(got, [formula(q) for q in Q.astype(np.float64)], rtol=1e-5, atol=1e-6, err_msg=name)
    assert t.reads == "q"


def test_actor_critic_targets_read_value_and_log_probabilities():
  out = {"logits": jnp.asarray(Q), "value": jnp.array([0.5, -1.0, 2.0])}
  energy = lambda name, tau=1.0: jax.vmap(targets.get_target(name, "actor_critic", 4, tau).energy)(out)
  for name, sign in (("T-", 1), ("S-", 1), ("T+", -1), ("S+", -1)):  # doomed: a low value
    assert targets.get_target(name, "actor_critic", 4).reads == "value"
    np.testing.assert_allclose(energy(name), sign * np.array([0.5, -1.0, 2.0]))
  logp = Q - np.log(np.exp(Q).sum(1, keepdims=True))
  assert targets.get_target("T+-", "actor_critic", 4).reads == "log-probabilities"
  np.testing.assert_allclose(
    energy("T+-", 0.5), [np_softmin_tau(p, 0.5) - np_softmax_tau(p, 0.5) for p in logp], rtol=1e-5, atol=1e-6
  )
  np.testing.assert_allclose(energy("action:3"), -logp[:, 3], rtol=1e-5, atol=1e-6)  # tau 1: -log pi(3)
  np.testing.assert_allclose(energy("S+-"), -logp.std(1), rtol=1e-5)
  # The logits' level does not matter: adding a constant to them changes no target.
  shifted = {"logits": out["logits"] + 7.0, "value": out["value"]}
  for name in ("T+-", "S+-", "action:1", "not-action:2"):
    t = targets.get_target(name, "actor_critic", 4)
    np.testing.assert_allclose(jax.vmap(t.energy)(shifted), jax.vmap(t.energy)(out), rtol=1e-4, atol=1e-5)


def test_softmax_tau_tends_to_max_and_min():
  q = jnp.asarray(Q[2])
  assert float(targets.softmax_tau(q, 1e-3)) == pytest.approx(5.0)
  assert float(targets.softmin_tau(q, 1e-3)) == pytest.approx(-3.0)


def test_bad_target_names():
  with pytest.raises(UserError, match="unknown target 'T0'; known: T\\+, T-"):
    targets.get_target("T0", "q", 4)
  with pytest.raises(UserError, match="action 9 is out of range; this agent has actions 0..3"):
    targets.get_target("action:9", "q", 4)
  with pytest.raises(UserError, match="must be an integer"):
    targets.get_target("action:up", "q", 4)
  with pytest.raises(UserError, match="cannot import"):
    targets.get_target("no_such_module:fn", "q", 4)
  with pytest.raises(UserError, match="tau must be positive"):
    targets.get_target("T+", "q", 4, tau=0.0)


def test_user_defined_target_from_a_module_path(tmp_path, monkeypatch):
  (tmp_path / "my_targets.py").write_text("def second_action(out):\n  return -out['q'][1]\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  t = targets.get_target("my_targets:second_action", "q", 4)
  np.testing.assert_allclose(jax.vmap(lambda q: t.energy({"q": q}))(jnp.asarray(Q)), -Q[:, 1])


def quadratic(v, key):
  del key
  return jnp.sum((v - 3.0) ** 2, axis=-1)


def test_drivers_agree_and_chunks_do_not_matter():
  v0 = jax.random.normal(jax.random.key(0), (10, 5))
  results = [
    optimise(quadratic, v0, OptimiseConfig(steps=60, lr=0.1, chunk=c, loop=loop), jax.random.key(1))
    for loop, c in (("python", 10), ("scan", 10), ("python", 3))
  ]
  for r in results[1:]:
    np.testing.assert_allclose(r.v, results[0].v, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r.curve, results[0].curve, rtol=1e-5)
  r = results[0]
  assert (r.energy_end < 0.05 * r.energy_start).all() and r.curve[-1] < r.curve[0]
  np.testing.assert_allclose(r.energy_end, quadratic(r.v, None), rtol=1e-5)  # v is the best iterate


def test_early_stop_freezes_rows_that_stopped_improving():
  v0 = jnp.concatenate([jnp.full((1, 2), 3.0), jax.random.normal(jax.random.key(0), (3, 2))])
  r = optimise(quadratic, v0, OptimiseConfig(steps=80, lr=0.1, patience=3, min_improvement=1e-3), jax.random.key(0))
  assert r.stopped_at[0] == 2  # already optimal: no improvement, stops after `patience` steps
  assert (r.stopped_at[1:] > r.stopped_at[0]).all()


def test_non_finite_energy_names_target_step_and_row():
  v0 = jnp.ones((4, 2)).at[2].set(-1.0)
  with pytest.raises(NonFiniteEnergy, match="target T- became non-finite at step 0 for state 2"):
    optimise(lambda v, k: jnp.log(v.sum(-1)), v0, OptimiseConfig(steps=3), jax.random.key(0), name="T-")
  with pytest.raises(UserError, match="--steps must be an integer >= 1, got 0"):
    OptimiseConfig(steps=0)


def test_sharded_search_on_four_virtual_devices_equals_one_device():
  script = textwrap.dedent("""
      import os
      os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
      import jax, jax.numpy as jnp, numpy as np
      from jaxprobe.parallel import batch_mesh, batch_sharding
      from jaxprobe.search.diversity import repulsion
      from jaxprobe.search.optimise import OptimiseConfig, optimise
      assert len(jax.devices()) == 4
      # The repulsion couples the rows across devices.
      f = lambda v, k: jnp.sum((v - 3.0) ** 2 * jnp.arange(1, 6), axis=-1) + 0.5 * repulsion(v)
      v0 = jax.random.normal(jax.random.key(0), (16, 5))
      cfg = OptimiseConfig(steps=30, lr=0.1)
      one = optimise(f, v0, cfg, jax.random.key(1))
      four = optimise(f, v0, cfg, jax.random.key(1), sharding=batch_sharding(batch_mesh(4)))
      np.testing.assert_allclose(one.v, four.v, rtol=1e-5, atol=1e-6)
      print("ok")
  """)
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
  assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-2000:]


def np_repulsion(u):
  """R_i of docs/search.md ('Diversity') in float64, pair by pair."""
  n, d = u.shape
  u = u.astype(np.float64) + diversity.JITTER * np.asarray(jax.random.normal(jax.random.key(0), u.shape))
  d2 = ((u[:, None] - u[None]) ** 2).sum(-1)
  k = np.exp(-d2 * np.log(n) / (2 * d))
  return (k.sum(1) - 1.0) / (n - 1)


def test_repulsion_equals_the_formula_and_its_gradient_finite_differences():
  u = np.array(jax.random.normal(jax.random.key(3), (6, 4)))
  u[1] = u[0] + 0.3  # one close pair
  np.testing.assert_allclose(diversity.repulsion(jnp.asarray(u)), np_repulsion(u), rtol=1e-4, atol=1e-6)
  np.testing.assert_array_equal(diversity.repulsion(jnp.ones((1, 4))), [0.0])
  w = jnp.arange(1.0, 7.0)
  grad = np.asarray(jax.grad(lambda x: jnp.sum(w * diversity.repulsion(x)))(jnp.asarray(u)))
  f = lambda x: float(np.sum(np.arange(1.0, 7.0) * np_repulsion(x)))
  eps = 1e-4
  numeric = np.zeros_like(u)
  for idx in np.ndindex(u.shape):
    e = np.zeros_like(u)
    e[idx] = eps
    numeric[idx] = (f(u + e) - f(u - e)) / (2 * eps)
  np.testing.assert_allclose(grad, numeric, rtol=1e-3, atol=1e-5)


def test_rows_that_start_equal_move_apart_only_with_the_repulsion():
  v0 = jnp.zeros((8, 5))
  cfg = OptimiseConfig(steps=60, lr=0.1)
  # The quadratic's second derivative (2) against the repulsion's (-4 weight / h^2, h^2 = 2 * 5 / log 8):
  # the rows part since 4 * 10 / 4.8 > 2 (docs/search.md, 'Diversity').
  apart = optimise(lambda v, k: quadratic(v, k) + 10.0 * diversity.repulsion(v), v0, cfg, jax.random.key(0))
  together = optimise(quadratic, v0, cfg, jax.random.key(0))
  distance = lambda v: np.sqrt(((v[:, None] - v[None]) ** 2).sum(-1))[~np.eye(8, dtype=bool)]
  assert distance(together.v).max() == 0.0
  assert distance(apart.v).min() > 0.5  # every pair separated, against a 0.01 jitter
  # ... around the quadratic's minimum at 3, from 0.
  assert np.abs(apart.v.mean(0) - 3.0).max() < 0.3
