"""envpool Atari environments with the DQN preprocessing every jaxprobe agent sees.

The agent's view is envpool's default Atari pipeline (docs/agents.md, section 'Observations'):
frame skip 4 with a max-pool of the last two raw frames, grayscale, INTER_AREA
resize to 84x84, a stack of 4, up to 30 no-op resets, no sticky actions, the
minimal action set. Observations are `(N, 4, 84, 84)` uint8; with
`colour=True` they are `(N, 12, 84, 84)`: the same 4 frames as RGB, for the
generator.
"""

from __future__ import annotations

import difflib
import functools
import re
from typing import Any

from jaxprobe.errors import UserError

FRAME_STACK = 4
FRAME_SIZE = 84
AGENT_OBS_SHAPE = (FRAME_STACK, FRAME_SIZE, FRAME_SIZE)  # the agent's view, uint8 NCHW
# The generator's colour stacks: the same frames as RGB, frame-major, channel-last (channel 3 * frame + c).
COLOUR_STACK_SHAPE = (FRAME_SIZE, FRAME_SIZE, 3 * FRAME_STACK)
RAM_BYTES = 128  # the Atari 2600's memory, as envpool reports it in info['ram']

# Stated explicitly (they equal envpool 1.2.5's defaults) so a change of
# envpool's defaults cannot silently change what agents see.
ATARI_PREPROCESSING = dict(
  stack_num=FRAME_STACK,
  frame_skip=4,
  img_height=FRAME_SIZE,
  img_width=FRAME_SIZE,
  noop_max=30,
  repeat_action_probability=0.0,
  use_fire_reset=True,
  full_action_space=False,
  max_episode_steps=27000,
)


def _envpool():
  # Imported on first use: machines without the emulator (a GPU or TPU host training generators
  # or searching latents) still load agents, datasets and generators.
  try:
    import envpool
  except ImportError as exc:
    raise UserError(
      f"this needs the Atari emulator, but envpool does not import ({exc}); install it with `pip install envpool`"
    ) from None
  return envpool


@functools.cache
def atari_env_ids() -> tuple[str, ...]:
  """Every envpool Atari id, sorted."""
  registry = _envpool().registration.registry
  return tuple(sorted(k for k, (module, _, _) in registry.specs.items() if module == "envpool.atari"))


def envpool_id_in(text: str) -> str | None:
  """The envpool id of the game a path or name mentions, or None: envpool's own ids (`Pong-v5`),
  Gym's and the RL Zoo's (`PongNoFrameskip-v4`, `PongDeterministic-v4`, `ALE/Pong-v5`), or a path
  component that is the game's name (Dopamine's runs: `.../Pong/1/checkpoints/ckpt.9`)."""
  ids = atari_env_ids()
  found = [i for i in ids if i in text]
  for name in re.findall(r"([A-Z][A-Za-z]+?)(?:NoFrameskip|Deterministic)?-v[045](?![A-Za-z0-9])", text):
    if f"{name}-v5" in ids:
      found.append(f"{name}-v5")
  if found:
    return max(found, key=len)
  # No id: the path component nearest the file that is a game's name.
  named = [f"{part}-v5" for part in re.split(r"[/\\]", text) if f"{part}-v5" in ids]
  return named[-1] if named else None


def check_env_id(env_id: str) -> str:
  """Returns `env_id` if it names an envpool Atari game, else a user error with close matches."""
  ids = atari_env_ids()
  if env_id in ids:
    return env_id
  by_lower = {i.lower(): i for i in ids}
  guesses = difflib.get_close_matches(env_id.lower(), list(by_lower), n=3, cutoff=0.6)
  if not guesses and env_id.lower() + "-v5" in by_lower:
    guesses = [env_id.lower() + "-v5"]
  hint = (
    f"; did you mean {', '.join(by_lower[g] for g in guesses)}?"
    if guesses
    else "; Atari ids look like Pong-v5 or Seaquest-v5"
  )
  raise UserError(f"unknown env id '{env_id}'{hint}")


def make_atari(
  env_id: str,
  num_envs: int = 1,
  seed: int = 0,
  colour: bool = False,
  episodic_life: bool = False,
  reward_clip: bool = False,
  **overrides: Any,
):
  """A gymnasium-API envpool vector env of `num_envs` Atari games.

  `episodic_life` and `reward_clip` are training aids (PPO/DQN); evaluation and
  probing use the real game (both False). `overrides` pass through to envpool.
  """
  check_env_id(env_id)
  kwargs = dict(ATARI_PREPROCESSING, gray_scale=not colour, episodic_life=episodic_life, reward_clip=reward_clip)
  kwargs.update(overrides)
  return _envpool().make(env_id, env_type="gymnasium", num_envs=num_envs, seed=seed, **kwargs)


def num_actions(env_id: str) -> int:
  """Size of the minimal action set of `env_id` (what agents output)."""
  env = make_atari(env_id, num_envs=1)
  n = int(env.action_space.n)
  env.close()
  return n
