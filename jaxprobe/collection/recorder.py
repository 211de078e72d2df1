"""Recording an agent's states into a dataset: it plays epsilon-greedily, every state it sees is kept.

The method and its values: docs/collection.md, section 'Collection'.

The agent acts on envpool's own grayscale stacks, exactly as in training. The
colour version of each stack comes from a second envpool instance of the same
game, seed and actions, stepped in lockstep; the two emulators' RAM is compared
after every step, so a recorded colour stack is always the same game state as
the grayscale one. (A weighted sum of the colour frames differs from envpool's
grayscale by up to 14/255, because envpool converts to gray before max-pooling
and resizing: that is why the agent's view is not computed from colour.)

Per chunk of steps the agent's outputs and the guided-backprop masks of the
greedy action are computed jitted over the whole chunk, then rows are flushed.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import jax
import numpy as np
from tqdm.auto import tqdm

from jaxprobe import saliency
from jaxprobe.agents.agent import Agent, act, fingerprint
from jaxprobe.agents.play import colour_stacks_channel_last, make_env_for
from jaxprobe.collection import dataset as ds
from jaxprobe.envs import AGENT_OBS_SHAPE, COLOUR_STACK_SHAPE, FRAME_SIZE, RAM_BYTES
from jaxprobe.errors import UserError
from jaxprobe.parallel import map_in_batches
from jaxprobe.stops import check, polled, uninterrupted

SALIENCY_BATCH = 64  # states per saliency call: one compile, bounded memory


def array_specs(agent: Agent, frames: int) -> dict:
  """Shape and dtype of every array of a dataset of `frames` states of `agent` (docs/collection.md)."""
  n, a = frames, agent.spec.num_actions
  outputs = (
    {"q": ((n, a), "float32")}
    if agent.spec.kind == "q"
    else {"logits": ((n, a), "float32"), "value": ((n,), "float32")}
  )
  return dict(
    colour=((n, *COLOUR_STACK_SHAPE), "uint8"),
    gray=((n, *AGENT_OBS_SHAPE), "uint8"),
    actions=((n,), "int32"),
    rewards=((n,), "float32"),
    dones=((n,), "bool"),
    episodes=((n,), "int32"),
    steps=((n,), "int32"),
    mask=((n, FRAME_SIZE, FRAME_SIZE), "float32"),
    ram=((n, RAM_BYTES), "uint8"),
    **outputs,
  )


def make_explainer(agent: Agent, blur_size: int):
  """A jitted `explain(params, obs) -> (outputs, M(x))`: the agent's head outputs (`spec.heads`, what a
  dataset stores) and saliency masks."""
  spec = agent.spec

  @jax.jit
  def explain(params, obs):
    outputs = spec.apply(params, obs)
    return {k: outputs[k] for k in spec.heads}, saliency.saliency_mask(
      saliency.guided_backprop(spec, params, obs), blur_size
    )

  return explain


def collect(
  agent: Agent,
  out: str | Path,
  frames: int,
  env_id: str | None = None,
  epsilon: float = 0.1,
  num_envs: int = 8,
  seed: int = 0,
  resume: bool = False,
  blur_size: int = 5,
  chunk_steps: int = 32,
  progress: bool = True,
  command: str = "",
) -> dict:
  """Records `frames` states into dataset `out`; returns timing and counts."""
  if frames <= 0:
    raise UserError(f"--frames must be positive, got {frames}")
  if num_envs <= 0:
    raise UserError(f"--num-envs must be positive, got {num_envs}")
  if not 0.0 <= epsilon <= 1.0:
    raise UserError(f"--epsilon must be in [0, 1], got {epsilon}")
  out = Path(out)
  partial = ds.partial_path(out)
  if out.exists():
    raise UserError(f"{out} already exists; choose another --out (nothing was overwritten)")
  env_id = env_id or agent.spec.env_id
  draft = dict(
    env_id=env_id,
    epsilon=epsilon,
    seed=seed,
    num_envs=num_envs,
    frames=frames,
    agent=dict(fingerprint=fingerprint(agent.params), **agent.spec.to_json(), metadata=agent.metadata),
    saliency=dict(
      method="guided",
      output=agent.spec.action_head,
      action="greedy",
      blur_size=blur_size,
      normalisation="per state, max 1",
    ),
    colour_layout="frame-major RGB, channel-last",
    command=command,
  )
  if resume:
    if not partial.is_dir():
      raise UserError(f"--resume: there is no partial collection at {partial}")
    saved = ds.read_progress(partial)
    for key in ("env_id", "epsilon", "seed", "num_envs", "frames", "agent"):
      mine = draft[key]["fingerprint"] if key == "agent" else draft[key]
      theirs = saved["manifest"][key]["fingerprint"] if key == "agent" else saved["manifest"][key]
      if mine != theirs:
        raise UserError(
          f"--resume: the partial collection in {partial} was made with {key} {theirs!r}, "
          f"not {mine!r}; use the same arguments"
        )
    count, episode_base = saved["count"], saved["next_episode"]
  else:
    if partial.exists():
      raise UserError(f"a partial collection is in {partial}: pass --resume to finish it, or delete it")
    count, episode_base = 0, 0

  # Fresh games on resume (emulators cannot be saved), seeded by how far the collection got. Made
  # before anything is written: an unknown env id or an action count that does not fit the agent
  # then leaves no partial collection behind.
  env_seed = seed + 7919 * count
  gray_env = make_env_for(agent, env_id, num_envs=num_envs, seed=env_seed)
  colour_env = make_env_for(agent, env_id, num_envs=num_envs, seed=env_seed, colour=True)
  if resume:
    missing = [name for name in array_specs(agent, frames) if not (partial / f"{name}.npy").is_file()]
    if missing:
      raise UserError(
        f"--resume: the partial collection in {partial} lacks {', '.join(missing)} (begun by an older "
        "jaxprobe); delete it and collect again"
      )
    arrays = ds.open_arrays_for_append(partial, list(array_specs(agent, frames)))
  else:
    with uninterrupted():  # a stopped collection leaves a partial one that --resume can finish, or none
      arrays = ds.create_arrays(partial, array_specs(agent, frames))
      ds.write_progress(partial, draft, 0, 0)
  policy = jax.jit(functools.partial(act, agent.spec))
  explain = make_explainer(agent, blur_size)
  key = jax.random.key(seed + count)
  times = dict(env=0.0, agent=0.0, saliency=0.0, writing=0.0)

  gray, info = gray_env.reset()
  colour, colour_info = colour_env.reset()
  episode = episode_base + np.arange(num_envs, dtype=np.int32)
  next_episode = episode_base + num_envs
  step_in_episode = np.zeros(num_envs, np.int32)
  was_done = np.zeros(num_envs, bool)
  bar = tqdm(total=frames, initial=count, unit="state", desc=f"collecting {env_id}", disable=not progress)
  t_start = time.perf_counter()
  try:
    with polled():  # a stop takes effect between two chunks
      while count < frames:
        rows = {k: [] for k in ("colour", "gray", "ram", "actions", "rewards", "dones", "episodes", "steps")}
        for _ in range(chunk_steps):
          t = time.perf_counter()
          key, act_key = jax.random.split(key)
          actions = np.asarray(policy(agent.params, gray, act_key, epsilon))
          times["agent"] += time.perf_counter() - t
          rows["colour"].append(colour_stacks_channel_last(colour))
          rows["gray"].append(gray)
          rows["ram"].append(info["ram"])  # the emulator's memory at this state (named objects' ground truth)
          rows["actions"].append(actions)
          rows["episodes"].append(episode.copy())
          rows["steps"].append(step_in_episode.copy())
          t = time.perf_counter()
          gray, _, terminated, truncated, info = gray_env.step(actions)
          colour, *_, colour_info = colour_env.step(actions)
          times["env"] += time.perf_counter() - t
          if not np.array_equal(info["ram"], colour_info["ram"]):
            raise RuntimeError("the grayscale and colour emulators diverged; please report this with the seed")
          done = terminated | truncated
          rows["rewards"].append(info["reward"].astype(np.float32))
          rows["dones"].append(done)
          # The step after a game over shows the final frame and ignores the action; the next
          # state is the new game's first, with a new episode id.
          new_game = was_done
          episode = np.where(new_game, next_episode + np.cumsum(new_game) - 1, episode).astype(np.int32)
          next_episode += int(new_game.sum())
          step_in_episode = np.where(new_game, 0, step_in_episode + 1).astype(np.int32)
          was_done = done
        # Env-major rows keep each game's states of a chunk consecutive.
        chunk = {k: np.stack(v, 1).reshape(num_envs * len(v), *v[0].shape[1:]) for k, v in rows.items()}
        n = min(len(chunk["actions"]), frames - count)
        chunk = {k: v[:n] for k, v in chunk.items()}
        t = time.perf_counter()
        outputs, chunk["mask"] = map_in_batches(
          lambda obs: explain(agent.params, obs), chunk["gray"], batch_size=SALIENCY_BATCH
        )
        times["saliency"] += time.perf_counter() - t
        t = time.perf_counter()
        chunk.update(outputs)
        for k, v in chunk.items():
          arrays[k][count : count + n] = v
        for a in arrays.values():
          a.flush()
        count += n
        ds.write_progress(partial, draft, count, int(next_episode))
        times["writing"] += time.perf_counter() - t
        bar.update(n)
        check()
  except KeyboardInterrupt as e:  # what is flushed stays: the progress file counts only whole chunks
    e.kept = f"{partial} holds {count} of {frames} states: finish it with the same command and --resume"
    raise
  finally:
    bar.close()
    gray_env.close()
    colour_env.close()
  del arrays
  t = time.perf_counter()
  with uninterrupted():
    ds.finalise(partial, out, draft, count)
  times["writing"] += time.perf_counter() - t
  wall = time.perf_counter() - t_start
  return dict(
    frames=count,
    wall_s=wall,
    states_per_s=(count - (saved["count"] if resume else 0)) / wall,
    times_s={k: round(v, 2) for k, v in times.items()},
  )
