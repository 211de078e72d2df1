"""The HTML report: probe runs, their novelty and nearest real states, and rollout evidence in one page.

The page is self-contained (images embedded as PNG data, no scripts, no network)
and every text taken from files is escaped (docs/evaluation.md, section 'Report').
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Sequence

import jax
import numpy as np
from PIL import Image

from jaxprobe.agents.agent import Agent, fingerprint
from jaxprobe.collection import objects
from jaxprobe.collection.dataset import Dataset
from jaxprobe.envs import COLOUR_STACK_SHAPE
from jaxprobe.errors import UserError
from jaxprobe.evaluation.gauges import LOW, gauge_summary
from jaxprobe.evaluation.novelty import BUCKETS, nearest_by_energy, novelty, spread
from jaxprobe.files import png_bytes
from jaxprobe.generator.spec import check_same_agent
from jaxprobe.report.images import grid, value_bars
from jaxprobe.search.modes import describe as describe_modes
from jaxprobe.search.spaces import recorded_energies
from jaxprobe.search.targets import describe, get_target


def load_run(path: str | Path) -> dict:
  """A probe run's `probe.json` (with its path), or a UserError if `path` is not a probe run."""
  path = Path(path)
  try:
    meta = json.loads((path / "probe.json").read_text())
  except FileNotFoundError:
    raise UserError(
      f"{path} is not a probe run (no probe.json); give directories written by `jaxprobe probe`"
    ) from None
  except (OSError, json.JSONDecodeError) as e:
    raise UserError(f"{path}/probe.json is unreadable ({type(e).__name__}); run the probe again") from None
  meta["path"] = path
  for target in meta.get("targets", []):  # every file the report reads, checked before any work
    folder = path / target["folder"]
    for name in ("run.json", "gray.npy", "colour.npy"):
      try:
        json.loads((folder / name).read_text()) if name.endswith(".json") else np.load(folder / name, mmap_mode="r")
      except FileNotFoundError:
        raise UserError(f"probe run {path} lacks {target['folder']}/{name}; run the probe again") from None
      except (OSError, ValueError) as e:  # JSONDecodeError is a ValueError; so is numpy's truncated file
        raise UserError(
          f"probe run {path}: {target['folder']}/{name} is truncated or damaged ({type(e).__name__}); "
          "run the probe again"
        ) from None
  return meta


def check_runs_fit(runs: Sequence[dict], agent: Agent, dataset: Dataset) -> None:
  """A UserError unless every run was probed, and `dataset` collected, with `agent`."""
  ours = fingerprint(agent.params)
  for run in runs:
    if run["agent"]["fingerprint"] != ours:
      raise UserError(
        f"{run['path']} was probed with another agent (fingerprint {run['agent']['fingerprint']}, "
        f"not {ours}); a report covers one agent"
      )
  check_same_agent(agent, dataset=dataset)


def png_data(image: np.ndarray) -> str:
  """An image as a `data:` URL, to embed in the page."""
  return "data:image/png;base64," + base64.b64encode(png_bytes(image, optimize=True)).decode()


def _frame(colour_or_gray: np.ndarray) -> np.ndarray:
  """The newest frame, RGB, 2x: from a colour stack (84, 84, 12) or a gray stack (4, 84, 84)."""
  a = np.asarray(colour_or_gray)
  rgb = a[..., -3:] if a.shape[-1] == COLOUR_STACK_SHAPE[-1] else np.repeat(a[-1][..., None], 3, -1)
  return np.kron(rgb, np.ones((2, 2, 1), np.uint8))


def _histogram_png(hist: np.ndarray, title: str) -> np.ndarray:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(4.2, 2.4), dpi=100)
  ax.bar(np.arange(len(hist)), hist, color="tab:purple")
  ax.set_xticks(np.arange(len(hist)), [f"{int(b * 100)}" for b in BUCKETS[:-1]], fontsize=7)
  ax.set_xlabel("% of pixels differing from the nearest real state", fontsize=8)
  ax.set_ylabel("states", fontsize=8)
  ax.set_title(title, fontsize=9)
  fig.tight_layout()
  buf = io.BytesIO()
  fig.savefig(buf, format="png")
  plt.close(fig)
  return np.asarray(Image.open(buf).convert("RGB"))


def shown_states(run: dict, show: int) -> list[tuple[int, str]]:
  """The states a target's sheet shows, with their captions' mode label: each mode's representative
  (largest mode first, 'mode 1 of 3: 45%'), then the lowest-energy states not yet shown, `show` in all.
  Runs written before modes existed show their lowest-energy states."""
  modes = run.get("modes") or {"representatives": [], "share": []}
  k = len(modes["representatives"])
  shown = [
    (i, f"mode {j + 1} of {k}: {100 * s:.0f}%")
    for j, (i, s) in enumerate(zip(modes["representatives"], modes["share"]))
  ]
  if k == 1:
    shown = [(shown[0][0], "one mode")]
  taken = {i for i, _ in shown}
  rest = [(i, "") for i in run["best_first"] if i not in taken]
  return (shown + rest)[: max(show, k)]


def target_section(folder: Path, agent: Agent, dataset: Dataset, tau: float, show: int, bg: np.ndarray) -> dict:
  """Best samples of one target with their nearest real states (by L2 and by energy), novelty, and
  their objects (`collection.objects.describe` against the dataset's background `bg`)."""
  run = json.loads((folder / "run.json").read_text())
  gray = np.load(folder / "gray.npy", mmap_mode="r")
  colour = np.load(folder / "colour.npy", mmap_mode="r")
  head = agent.spec.action_head
  shown = shown_states(run, show)
  best = np.array([i for i, _ in shown])
  nov = novelty(np.asarray(gray), dataset["gray"])
  try:
    target = get_target(run["target"], agent.spec.kind, agent.spec.num_actions, tau)
    ref_energy = recorded_energies(agent, target, dataset)
    by_energy = nearest_by_energy(np.asarray(run["energy_end"])[best], ref_energy)[:, 0]
    outputs = {k: np.asarray(v, np.float32) for k, v in run["outputs"].items()}
    values = np.asarray(jax.vmap(target.energy)(outputs))  # the target alone: no prior, no diversity
  except UserError:  # a user target whose module is not importable here
    by_energy = ref_energy = values = None
  starts = run.get("start_rows")  # searches started from real states (--init data, data-nearest)
  if starts is not None and Path(run.get("start_dataset") or "").absolute() != Path(dataset.path).absolute():
    starts = None  # its rows index another dataset than the report's
  tiles, captions = [], []
  for j, i in enumerate(best):
    q = np.asarray(run["outputs"][head][i])
    real = nov.nearest[i]
    row = [_frame(colour[i]), _frame(dataset["colour"][real])]
    if starts is not None:
      row.insert(0, _frame(dataset["colour"][starts[i]]))
    if by_energy is not None:
      row.append(_frame(dataset["colour"][by_energy[j]]))
    gap = np.full((row[0].shape[0], 6, 3), 24, np.uint8)
    img = np.concatenate([x for frame in row for x in (frame, gap)][:-1], axis=1)
    bars = value_bars(q, 168, 30, int(np.argmax(q)))
    bars = np.concatenate([bars, np.full((30, img.shape[1] - 168, 3), 24, np.uint8)], axis=1)
    tiles.append(np.concatenate([img, bars], axis=0))
    mode = shown[j][1]
    captions.append(
      (f"{mode}  " if mode else "")
      + f"E={run['energy_end'][i]:.2f}  differs {100 * nov.fraction_different[i]:.0f}%  a={int(np.argmax(q))}"
    )
  return dict(
    run=run,
    novelty=nov.summary(),
    spread=spread(gray),
    gauges=gauge_summary(colour, agent.spec.env_id),
    objects=objects.describe(np.asarray(colour), bg),
    sheet=grid(tiles, captions, cols=2, caption_height=16),
    histogram=_histogram_png(nov.histogram, f"{run['target']} ({run['space']}): novelty"),
    by_energy=by_energy is not None,
    sentence=None if values is None else weakness_sentence(run, values, ref_energy, agent.spec.num_actions),
  )


def weakness_sentence(run: dict, values: np.ndarray, real_values: np.ndarray, num_actions: int) -> str:
  """One sentence from the measured numbers: whether the found states are more extreme than real play
  (their median target value below the real states' 5th percentile), with the evidence.

  `values`: the target's energy of the agent's outputs on each found state, without the prior and
  diversity terms; `real_values`: the same on every real state of the report's dataset.
  """
  name, median = run["target"], float(np.median(values))
  p5 = float(np.percentile(real_values, 5))
  beyond = 100 * float(np.mean(real_values > median))
  evidence = (
    f"the median of the {len(values)} found states has target value {median:.3f}, against {p5:.3f} "
    f"for the 5th percentile of {len(real_values)} real states"
  )
  if median >= p5:
    return (
      f"{name} ({describe(name)}): no weakness found for this target: {evidence}, so the search "
      "found nothing more extreme than real play."
    )
  counts = np.bincount(np.asarray(run["greedy_action"]), minlength=num_actions)
  modes = run.get("modes")
  parts = [
    f"{name} ({describe(name)}): found: {evidence}; {beyond:.1f}% of real states are less extreme",
    f"the agent's most common choice there is action {int(np.argmax(counts))} "
    f"({100 * counts.max() / counts.sum():.0f}% of them)",
  ]
  if modes:
    parts.append(f"modes (count, % of states): {describe_modes(modes)}")
  return "; ".join(parts) + "."


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1200px;color:#1d1d24;
background:#fafafa}
h1{margin-bottom:.2em} h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
.meta{color:#555;font-size:.9em} table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:.3em .7em;text-align:right}
th{background:#eee} .pair{display:flex;gap:1.5em;flex-wrap:wrap;align-items:flex-start} figure{margin:0}
figcaption{font-size:.85em;color:#444;max-width:620px} img{image-rendering:pixelated;border:1px solid #ccc}
"""


def build_report(runs: Sequence[dict], agent: Agent, dataset: Dataset, rollouts: dict | None, show: int = 8) -> str:
  """The report page: a summary table, per target the best states of each run beside their nearest
  real states and the novelty histogram, then the rollout evidence.
  """
  check_runs_fit(runs, agent, dataset)
  e = html.escape
  parts = [
    f"<!doctype html><html><head><meta charset='utf-8'><title>jaxprobe report: {e(agent.spec.env_id)}</title>"
    f"<style>{CSS}</style></head><body>",
    f"<h1>Weaknesses of the {e(agent.spec.kind)} agent on {e(agent.spec.env_id)}</h1>",
    f"<p class='meta'>agent {e(runs[0]['agent'].get('path', ''))}"
    + (f", imported from {e(str(agent.metadata['source']))}" if "source" in agent.metadata else "")
    + f" (fingerprint {e(fingerprint(agent.params))}); "
    f"dataset {e(str(dataset.path))} ({len(dataset)} states).</p><p>Each sample shows three frames: "
    f"<b>the synthesized state</b>, <b>its nearest real state by pixels</b>, and <b>the real state whose "
    f"target value is closest</b> (newest frame of each stack); a search started from real states "
    f"(--init data) shows <b>the state it started from</b> first. The bars under it are the agent's outputs "
    f"on the synthesized state, its greedy action in orange.</p>",
  ]
  sections = {}
  for run in runs:
    for t in run["targets"]:
      sections.setdefault(t["target"], []).append((run, t))
  summary_rows, sentences = [], []
  bg = objects.background(dataset["colour"])
  for name, entries in sections.items():
    parts.append(f"<h2>{e(name)}: {e(describe(name))}</h2><div class='pair'>")
    for run, t in entries:
      sec = target_section(Path(run["path"]) / t["folder"], agent, dataset, run["config"]["tau"], show, bg)
      r, nov = sec["run"], sec["novelty"]
      if sec["sentence"] and r["space"] == "latent":
        sentences.append(sec["sentence"])
      summary_rows.append(
        (
          name,
          r["space"],
          r["num"],
          r["energy_start_mean"],
          r["energy_end_mean"],
          nov["mean_fraction_different"],
          sec["spread"],
          r.get("modes"),
          sec["objects"],
          sec["gauges"],
        )
      )
      parts.append(
        f"<figure><img alt='{e(name)} {e(r['space'])} samples' src='{png_data(sec['sheet'])}'>"
        f"<figcaption>{e(r['space'])} space: one state per mode (its lowest-energy one), then the "
        f"lowest-energy others, of {r['num']} states "
        f"({r['steps']} steps; mean energy {r['energy_start_mean']:.3f} -> {r['energy_end_mean']:.3f}); "
        f"on average {100 * nov['mean_fraction_different']:.1f}% of pixels differ from the nearest real "
        f"state.</figcaption></figure>"
        f"<figure><img alt='{e(name)} {e(r['space'])} novelty' src='{png_data(sec['histogram'])}'></figure>"
      )
    parts.append("</div>")
  if sentences:  # what was found, first: one sentence per target of the latent searches
    parts.insert(3, "<h2>Weaknesses found</h2><ul>" + "".join(f"<li>{e(x)}</li>" for x in sentences) + "</ul>")
  parts.insert(
    3 + bool(sentences),
    _summary_table(
      summary_rows,
      gauge_summary(dataset["colour"], agent.spec.env_id),
      len(dataset),
      spread(dataset["gray"]),
      objects.describe(
        dataset["colour"][np.linspace(0, len(dataset) - 1, min(len(dataset), objects.DESCRIBE_STATES)).astype(int)], bg
      ),
    ),
  )
  if rollouts is not None:
    s = rollouts["summary"]
    parts.append(
      f"<h2>Rollout evidence: {s['games']} games</h2><table><tr><th>mean score</th><th>mean length</th>"
      f"<th>life losses per game</th>"
      + ("<th>deaths with low oxygen</th>" if "deaths_with_low_oxygen" in s else "")
      + f"</tr><tr><td>{s['mean_score']:.1f}</td><td>{s['mean_length']:.0f}</td>"
      + f"<td>{s['life_losses_per_game']:.2f}</td>"
      + (
        f"<td>{s['deaths_with_low_oxygen']} of {s['life_losses']} "
        f"({100 * (s['share_of_deaths_with_low_oxygen'] or 0):.0f}%, "
        f"oxygen {e(s['low_oxygen_threshold'])})</td>"
        if "deaths_with_low_oxygen" in s
        else ""
      )
      + "</tr></table>"
    )
    deaths = rollouts["deaths"][:16]
    if deaths:
      tiles = [np.kron(np.repeat(d["frame"][..., None], 3, -1), np.ones((2, 2, 1), np.uint8)) for d in deaths]
      caps = [f"game {d['game']} step {d['step']}" + (f" O2 {d['oxygen']}" if "oxygen" in d else "") for d in deaths]
      parts.append(
        f"<figure><img alt='frames before life losses' src='{png_data(grid(tiles, caps, cols=4))}'>"
        "<figcaption>The agent's last frame before each life loss.</figcaption></figure>"
      )
  parts.append("</body></html>")
  return "\n".join(parts)


def _summary_table(rows: list, real_gauges: dict, real_states: int, real_spread: float, real_objects: dict) -> str:
  """One row per target and space; for games with pixel gauges (Seaquest's oxygen), their readings
  on the samples beside the same readings on the real states, so a hypothesis can be checked; the
  samples' spread and objects beside the real states' show a search that collapsed onto one state
  or a generator that does not draw the game's small objects."""
  e = html.escape
  names = list(real_gauges)
  cell = lambda g: f"<td>{100 * g['mean']:.0f}% / {100 * g['share_low']:.0f}%</td>"
  head = (
    "<h2>Summary</h2><table><tr><th>target</th><th>space</th><th>states</th><th>energy before</th>"
    "<th>energy after</th><th>pixels differing from nearest real state</th><th>spread</th><th>modes (% of states)</th>"
    "<th>objects per frame</th><th>frames with a 2-6 px object</th>"
    + "".join(f"<th>{e(n)}: mean / share &le; {100 * LOW:.0f}%</th>" for n in names)
    + "</tr>"
  )
  object_cells = lambda o: (
    f"<td>{o['objects_per_frame']:.2f}</td><td>{100 * o['share_with_object_of_size']['2-6']:.0f}%</td>"
  )
  body = "".join(
    f"<tr><td>{e(n)}</td><td>{e(s)}</td><td>{k}</td><td>{a:.3f}</td><td>{b:.3f}</td>"
    f"<td>{100 * f:.1f}%</td><td>{d:.1e}</td><td>{describe_modes(m) if m else ''}</td>"
    + object_cells(o)
    + "".join(cell(g[x]) for x in names)
    + "</tr>"
    for n, s, k, a, b, f, d, m, o, g in rows
  )
  body += (
    f"<tr><td>real states</td><td>dataset</td><td>{real_states}</td><td></td><td></td><td></td>"
    f"<td>{real_spread:.1e}</td><td></td>"
    + object_cells(real_objects)
    + "".join(cell(real_gauges[x]) for x in names)
    + "</tr>"
  )
  note = (
    "<p class='meta'>spread: the mean squared difference between two states of a row (agent's view, "
    "[0, 1] units); far below the real states' it means the search found one state many times. "
    "Modes: groups of similar found states, their number chosen from the data (on the agent's "
    "features of them, a Gaussian mixture whose number of components has the lowest BIC; jaxprobe.search.modes). "
    "Objects: groups of at least 2 pixels that differ from the dataset's median frame by more than 25% "
    "(jaxprobe.collection.objects), in each of the four frames of a state; in Pong the ball is a 2-6 px "
    "object."
    + (
      f" {', '.join(e(n) for n in names)} read from the pixels of the newest frame "
      f"(jaxprobe.evaluation.gauges), as a share of full."
      if names
      else ""
    )
    + "</p>"
  )
  return head + body + "</table>" + note
