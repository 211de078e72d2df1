"""`jaxprobe dataset info`: what a dataset holds, in numbers and one picture."""
from __future__ import annotations

import numpy as np

from jaxprobe.data.dataset import Dataset
from jaxprobe.report.images import grid


def summary(dataset: Dataset) -> dict:
  """Counts, action histogram and the raw scores of the games that ended inside the dataset."""
  actions = np.asarray(dataset["actions"])
  episodes, rewards, dones = (np.asarray(dataset[k]) for k in ("episodes", "rewards", "dones"))
  finished = np.unique(episodes[dones])
  returns = [float(rewards[episodes == e].sum()) for e in finished]
  m = dataset.manifest
  return dict(path=str(dataset.path), states=len(dataset), env_id=m["env_id"], epsilon=m["epsilon"], seed=m["seed"],
              agent=dict(kind=m["agent"]["kind"], num_actions=m["agent"]["num_actions"],
                         fingerprint=m["agent"]["fingerprint"]),
              action_histogram=np.bincount(actions, minlength=m["agent"]["num_actions"]).tolist(),
              episodes_started=int(len(np.unique(episodes))), games_finished=len(returns),
              game_scores=returns, mean_game_score=float(np.mean(returns)) if returns else None)


def contact_sheet(dataset: Dataset, num: int = 12, seed: int = 0) -> np.ndarray:
  """Random states: the newest colour frame beside the agent's grayscale view of it, 2x size."""
  idx = np.sort(np.random.default_rng(seed).choice(len(dataset), min(num, len(dataset)), replace=False))
  tiles, captions = [], []
  up = lambda a: np.kron(a, np.ones((2, 2, 1), np.uint8))
  for i in idx:
    colour = np.asarray(dataset["colour"][i])[..., -3:]
    gray = np.repeat(np.asarray(dataset["gray"][i])[-1][..., None], 3, -1)
    tiles.append(np.concatenate([up(colour), up(gray)], axis=1))
    captions.append(f"#{i} ep {int(dataset['episodes'][i])} a={int(dataset['actions'][i])}")
  return grid(tiles, captions, cols=4)
