"""Targets: energies of one state's agent outputs, lowest where the state is of interest (docs/search.md, 'Targets').

Each core function takes one state's action-value vector `q` `(A,)` (unbatched,
rlax style) and returns a scalar energy; callers `vmap` them. For actor-critic
agents, which have no action values, the value head stands in for the level of
value (T+, T-, S+, S-: doomed is a low value) and the policy's log-probabilities
for q in the targets that compare actions (T+-, S+-, action:N, not-action:N);
each `Target` records what it read in `reads`.
"""

from __future__ import annotations

import importlib
from typing import Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp

from jaxprobe.errors import UserError


def softmax_tau(q: chex.Array, tau: float) -> chex.Array:
  """Smooth maximum: the mean of q under softmax(q / tau)."""
  chex.assert_rank(q, 1)
  return jnp.sum(q * jax.nn.softmax(q / tau))


def softmin_tau(q: chex.Array, tau: float) -> chex.Array:
  """Smooth minimum: the mean of q under softmax(-q / tau)."""
  chex.assert_rank(q, 1)
  return jnp.sum(q * jax.nn.softmax(-q / tau))


def t_plus(q, tau):
  """T+: -softmin_tau(q), lowest where even the worst action is valued highly."""
  return -softmin_tau(q, tau)


def t_minus(q, tau):
  """T-: softmax_tau(q), lowest where even the best action is valued low (doomed states)."""
  return softmax_tau(q, tau)


def t_plus_minus(q, tau):
  """T+-: softmin_tau(q) - softmax_tau(q), lowest where one action is much better than another."""
  return softmin_tau(q, tau) - softmax_tau(q, tau)


def s_plus(q, tau):
  """S+: -mean(q), lowest where the value under a uniformly random action is high."""
  del tau
  return -jnp.mean(q)


def s_minus(q, tau):
  """S-: mean(q), lowest where the value under a uniformly random action is low."""
  del tau
  return jnp.mean(q)


def s_plus_minus(q, tau):
  """S+-: -std(q), lowest where the actions' values disagree most."""
  del tau
  return -jnp.std(q)


def action_preference(q: chex.Array, action: int, tau: float) -> chex.Array:
  """q_a - tau * logsumexp(q / tau): how far action `a` leads the others (0 when it alone is best)."""
  chex.assert_rank(q, 1)
  return q[action] - tau * jax.nn.logsumexp(q / tau)


CORE = {"T+": t_plus, "T-": t_minus, "T+-": t_plus_minus, "S+": s_plus, "S-": s_minus, "S+-": s_plus_minus}
DESCRIPTIONS = {
  "T+": "even the worst action is valued highly",
  "T-": "even the best action is valued low (doomed)",
  "T+-": "one action much better than another (critical decision)",
  "S+": "high expected value",
  "S-": "low expected value",
  "S+-": "strong disagreement among actions",
  "action:N": "action N dominates the others",
  "not-action:N": "action N is the worst choice",
}
# On actor-critic agents: the sign of the value head in T+, T-, S+ and S- (docs/search.md, 'Targets').
VALUE_LEVEL = {"T+": -1.0, "T-": 1.0, "S+": -1.0, "S-": 1.0}
KNOWN = tuple(CORE) + ("action:N", "not-action:N", "module:function")


def describe(name: str) -> str:
  """What a target's low-energy states mean, in words."""
  if name in DESCRIPTIONS:
    return DESCRIPTIONS[name]
  for prefix in ("action", "not-action"):
    if name.startswith(prefix + ":"):
      return DESCRIPTIONS[prefix + ":N"].replace("N", name.split(":", 1)[1])
  return "a user-defined target"


class Target(NamedTuple):
  """A target by name: its energy of one state's outputs dict, and which output it reads."""

  name: str
  energy: Callable[[dict], jnp.ndarray]  # one state's outputs {"q"} or {"logits", "value"} -> scalar
  reads: str  # which output it used, for the record


def get_target(name: str, kind: str, num_actions: int, tau: float = 1.0) -> Target:
  """The target called `name` for an agent of `kind` ("q" or "actor_critic").

  `name` is one of T+, T-, T+-, S+, S-, S+-, action:N, not-action:N, or
  `package.module:function` for a user's own energy of one state's outputs dict.
  """
  if tau <= 0:
    raise UserError(f"the temperature tau must be positive, got {tau}")
  if kind == "actor_critic":
    if name in VALUE_LEVEL:  # a policy's logits have no level: the value head is the agent's estimate of return
      sign = VALUE_LEVEL[name]
      return Target(name, lambda out: sign * out["value"], "value")
    values, reads = lambda out: jax.nn.log_softmax(out["logits"]), "log-probabilities"
  else:
    values, reads = lambda out: out["q"], "q"
  if name in CORE:
    core = CORE[name]
    return Target(name, lambda out: core(values(out), tau), reads)
  for prefix, sign in (("action:", -1.0), ("not-action:", 1.0)):
    if name.startswith(prefix):
      try:
        action = int(name[len(prefix) :])
      except ValueError:
        raise UserError(f"target '{name}': the action must be an integer, e.g. {prefix}2") from None
      if not 0 <= action < num_actions:
        raise UserError(
          f"target '{name}': action {action} is out of range; this agent has actions 0..{num_actions - 1}"
        )
      return Target(name, lambda out: sign * action_preference(values(out), action, tau), reads)
  if ":" in name and not name.startswith(("action", "not-action")):
    return Target(
      name, checked_user_energy(name, _import_energy(name), kind, num_actions), "user function of all outputs"
    )
  raise UserError(f"unknown target '{name}'; known: {', '.join(KNOWN)}")


def checked_user_energy(name: str, fn: Callable, kind: str, num_actions: int) -> Callable[[dict], jnp.ndarray]:
  """`fn`, once it has returned a finite scalar for each of 4 made-up states' outputs (standard normal
  values in the agent's output shapes), before any search compiles; else a UserError saying what it did."""
  keys = jax.random.split(jax.random.key(0), 2)
  if kind == "actor_critic":
    outputs = dict(logits=jax.random.normal(keys[0], (4, num_actions)), value=jax.random.normal(keys[1], (4,)))
  else:
    outputs = dict(q=jax.random.normal(keys[0], (4, num_actions)))
  try:
    values = jax.vmap(fn)(outputs)
  except Exception as e:  # the user's code: anything it raises is reported, not a jaxprobe bug
    first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
    raise UserError(
      f"target '{name}': your function raised {type(e).__name__}: {first} (called with one state's outputs "
      f"{{{', '.join(f'{k!r}: array{v.shape[1:]}' for k, v in outputs.items())}}})"
    ) from None
  if not hasattr(values, "shape") or values.shape != (4,):
    got = f"shape {values.shape[1:]}" if hasattr(values, "shape") else type(values).__name__
    raise UserError(f"target '{name}': your function must return one number per state (a scalar), got {got}")
  if not jnp.isfinite(values).all():
    raise UserError(f"target '{name}': your function returned a non-finite value for ordinary outputs")
  return fn


def _import_energy(path: str) -> Callable[[dict], jnp.ndarray]:
  module_name, _, attr = path.partition(":")
  try:
    fn = getattr(importlib.import_module(module_name), attr)
  except (ImportError, AttributeError) as e:
    raise UserError(f"target '{path}': cannot import it ({type(e).__name__}: {e})") from None
  if not callable(fn):
    raise UserError(f"target '{path}' is not a function")
  return fn
