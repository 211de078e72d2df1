"""How much of a real state survives the generator, for the agent (docs/generator.md, 'Goggles and fidelity').

Goggles (the paper's Table 1): the agent plays the real game seeing only G(E(x)); its
score against its own score on the same games. Fidelity: state by state on a dataset,
how often the agent's greedy action survives, the distance of its outputs, and the
reconstruction error on salient pixels and elsewhere.
"""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np

from jaxprobe.agents.agent import Agent, AgentSpec
from jaxprobe.agents.play import evaluate
from jaxprobe.collection import objects
from jaxprobe.collection.dataset import Dataset, draw_rows
from jaxprobe.errors import UserError
from jaxprobe.generator import losses
from jaxprobe.generator.spec import GeneratorBundle, GeneratorSpec, check_same_agent, check_same_game


def reconstruct_fn(generator: GeneratorBundle):
  """colour stacks (N, 84, 84, 12) uint8 -> the agent's view of G(E(x)), (N, 4, 84, 84) in [0, 255]."""
  reconstruct = jax.jit(lambda variables, colour: generator.reconstruct(variables, colour)["agent_view"])
  return lambda colour: reconstruct(generator.variables, colour)


def goggles(
  agent: Agent,
  generator: GeneratorBundle,
  episodes: int,
  env_id: str | None = None,
  epsilon: float = 0.01,
  seed: int = 0,
  progress: bool = True,
) -> dict:
  """The agent's score with and without goggles on the same games (same seeds)."""
  check_same_agent(agent, generator=generator)
  own = evaluate(agent, episodes, env_id, epsilon, seed, progress=progress).summary()
  seen = evaluate(
    agent, episodes, env_id, epsilon, seed, progress=progress, observe=reconstruct_fn(generator)
  ).summary()
  return dict(
    agent=own,
    goggles=seen,
    env_id=env_id or agent.spec.env_id,
    epsilon=epsilon,
    seed=seed,
    generator=generator.metadata.get("ablation", "?"),
  )


ERROR_SCALES = (0.5, 0.25, 0.1)  # fidelity's third reference: the reconstruction's error, shrunk


@functools.lru_cache(maxsize=8)
def compare_fn(agent_spec: AgentSpec, generator_spec: GeneratorSpec):
  """The jitted per-batch sums of `fidelity` for one agent and generator architecture, compiled once
  (a training run measures every checkpoint with it): `(agent params, generator variables, colour,
  gray, mask, key) -> (sums, reconstruction as uint8 colour stacks)`."""
  head = agent_spec.action_head
  generator = GeneratorBundle(generator_spec, None)  # reconstruct needs the architecture only

  @jax.jit
  def compare(agent_params, variables, colour, gray, mask, key):
    out = generator.reconstruct(variables, colour)
    gray = gray.astype(jnp.float32)
    # Two references for the share of actions kept: the real state moved one pixel right (its
    # first column repeated), and the real state plus Gaussian noise as large as the
    # reconstruction's own error in the agent's view (per-state RMS).
    shifted = jnp.concatenate([gray[..., :1], gray[..., :-1]], axis=-1)
    rms = jnp.sqrt(jnp.mean((out["agent_view"] - gray) ** 2, axis=(1, 2, 3), keepdims=True))
    noisy = jnp.clip(gray + rms * jax.random.normal(key, gray.shape), 0.0, 255.0)
    real, recon, moved, noised = (
      agent_spec.apply(agent_params, x)[head] for x in (gray, out["agent_view"], shifted, noisy)
    )
    # How far the error must shrink, keeping its shape, for the agent to keep its action.
    shrunk = [agent_spec.apply(agent_params, gray + s * (out["agent_view"] - gray))[head] for s in ERROR_SCALES]
    error = ((out["colour"] - colour / 255.0) ** 2).mean(-1)  # (N, 84, 84): per colour value
    salient = mask > 0.5
    best = real.argmax(-1)
    kept, stable = best == recon.argmax(-1), best == moved.argmax(-1)
    sums = dict(
      agree=kept.sum(),
      agree_shifted=stable.sum(),
      agree_stable=(kept & stable).sum(),
      agree_noise=(best == noised.argmax(-1)).sum(),
      **{f"agree_scaled_{s}": (best == q.argmax(-1)).sum() for s, q in zip(ERROR_SCALES, shrunk)},
      l_a=losses.perception(real, recon).sum(),
      l_a_centred=losses.perception(real, recon, centred=True).sum(),
      err_salient=(error * salient).sum(),
      n_salient=salient.sum(),
      err_rest=(error * ~salient).sum(),
      n_rest=(~salient).sum(),
    )
    return sums, jnp.round(out["colour"] * 255).astype(jnp.uint8)

  return compare


def fidelity(
  agent: Agent,
  generator: GeneratorBundle,
  dataset: Dataset,
  num: int = 1000,
  batch: int = 100,
  seed: int = 0,
  background: np.ndarray | None = None,
) -> dict:
  """How much of what the agent reads survives G(E(x)), on `num` real states of `dataset`.

  Finer than goggles' game score, which saturates where the agent still plays well on
  an imperfect view: the share of states where the agent's greedy action on the
  reconstruction equals its action on the real state, with two references that say how
  fragile the agent's choice is (the same share for the real state moved one pixel right,
  and for the real state plus Gaussian noise as large as the reconstruction's error in the
  agent's view, seeded by `seed`), and the share on the stable states alone (those whose
  action survives the one-pixel move; None when there are none), and the share with the
  reconstruction's error scaled down by each of `ERROR_SCALES`, x + s (x' - x): how far the
  error must shrink, at its shape, for the agent to keep its actions; the mean squared
  distance of its action outputs (L_a, and what is left of it after centring each vector on
  its mean over actions); the
  reconstruction's squared error per colour value on the salient pixels (mask > 0.5: ball,
  paddles, the agent's submarine) and on the rest; and how many of the real states' objects it
  draws (`collection.objects`: recall overall and by size, states with every object drawn,
  precision), against the dataset's background, and where the dataset holds RAM, each named
  object of the game (`objects.NAMED_OBJECTS`: the ball drawn in how many of the states with a
  ball). `background`: the dataset's
  (`objects.background`), when the caller has it already.
  """
  check_same_agent(agent, generator=generator)
  if num <= 0:
    raise UserError(f"--states must be positive, got {num}")
  check_same_game(agent, dataset)
  game = agent.spec.env_id
  if tuple(dataset["colour"].shape[1:]) != tuple(generator.spec.image_shape):
    raise UserError(
      f"dataset {dataset.path} holds states of shape {tuple(dataset['colour'].shape[1:])}, the generator "
      f"draws {tuple(generator.spec.image_shape)}; use a dataset collected with jaxprobe collect"
    )
  idx = draw_rows(len(dataset), num, seed)
  bg = objects.background(dataset["colour"]) if background is None else background
  named = objects.NAMED_OBJECTS.get(game, ()) if "ram" in dataset.arrays else ()
  totals: dict[str, float] = {}
  object_counts = None
  for start in range(0, len(idx), batch):
    rows = idx[start : start + batch]
    colour = np.asarray(dataset["colour"][rows])
    gray, mask = np.asarray(dataset["gray"][rows]), np.asarray(dataset["mask"][rows])
    compare = compare_fn(agent.spec, generator.spec)
    key = jax.random.fold_in(jax.random.key(seed), start)
    part, recon_colour = jax.device_get(
      compare(agent.params, generator.variables, jnp.asarray(colour), gray, mask, key)
    )
    for k, v in part.items():
      totals[k] = totals.get(k, 0.0) + float(v)
    ram = np.asarray(dataset["ram"][rows]) if named else None
    object_counts = objects.add(object_counts, objects.compare(colour, recon_colour, bg, ram=ram, named=named))
  n = len(idx)
  return dict(
    states=n,
    action_agreement=totals["agree"] / n,
    action_agreement_shifted_1px=totals["agree_shifted"] / n,
    action_agreement_noise=totals["agree_noise"] / n,
    action_agreement_stable=totals["agree_stable"] / totals["agree_shifted"] if totals["agree_shifted"] else None,
    action_agreement_error_scaled={str(s): totals[f"agree_scaled_{s}"] / n for s in ERROR_SCALES},
    L_a=totals["l_a"] / n,
    L_a_centred=totals["l_a_centred"] / n,
    mse_salient=totals["err_salient"] / max(totals["n_salient"], 1.0),
    mse_rest=totals["err_rest"] / max(totals["n_rest"], 1.0),
    salient_share=totals["n_salient"] / (totals["n_salient"] + totals["n_rest"]),
    **objects.summarise(object_counts),
  )


def fidelity_row(f: dict) -> dict:
  """`fidelity`'s numbers as one flat table row: actions kept, objects drawn by size and by name."""
  names = (
    "action_agreement",
    "action_agreement_shifted_1px",
    "action_agreement_noise",
    "action_agreement_stable",
    "L_a",
    "L_a_centred",
  )
  row = {k: f[k] for k in (*names, "object_recall", "states_all_drawn", "object_precision")}
  row.update({f"recall_{size}": share for size, share in f["recall_by_size"].items()})
  row.update({"drawn_" + re.sub(r"\W+", "_", name): share for name, share in f["named_drawn"].items()})
  return {k: "" if v is None else round(float(v), 4) for k, v in row.items()}
