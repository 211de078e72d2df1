"""Novelty against brute force, and the HTML report: renders in Chromium, refuses mixed agents."""

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path

import jax
import numpy as np
import pytest
from test_probe import tiny_generator

import jaxprobe
from jaxprobe.agents import Agent, AgentSpec
from jaxprobe.agents.checkpoint import load_agent, save_agent
from jaxprobe.cli import main
from jaxprobe.collection import objects
from jaxprobe.collection.dataset import open_dataset
from jaxprobe.collection.recorder import collect
from jaxprobe.commands.probe import write_run
from jaxprobe.envs import make_atari
from jaxprobe.evaluation.gauges import GAUGES, gauge_summary, read_gauge
from jaxprobe.evaluation.novelty import DIFFERENT_ABOVE, nearest_by_energy, novelty, spread
from jaxprobe.evaluation.rollouts import oxygen_at_death, rollout_evidence
from jaxprobe.generator.spec import save_generator
from jaxprobe.report.html import target_section, weakness_sentence
from jaxprobe.search.spaces import ProbeConfig, probe


def test_novelty_equals_brute_force():
  rng = np.random.default_rng(0)
  reference = rng.integers(0, 256, (300, 4, 84, 84), dtype=np.uint8)
  states = np.concatenate(
    [
      reference[[5, 77]] ^ rng.integers(0, 2, (2, 4, 84, 84), dtype=np.uint8),
      rng.integers(0, 256, (5, 4, 84, 84), dtype=np.uint8),
    ]
  )
  result = novelty(states, reference)
  d = ((states[:, None].astype(np.float64) - reference[None].astype(np.float64)) / 255.0) ** 2
  mse = d.reshape(len(states), len(reference), -1).mean(-1)
  np.testing.assert_array_equal(result.nearest, mse.argmin(1))
  assert result.nearest[:2].tolist() == [5, 77]
  np.testing.assert_allclose(result.mse, mse.min(1), rtol=1e-9)
  nearest = reference[mse.argmin(1)]
  differs = (np.abs(states.astype(int) - nearest.astype(int)) > DIFFERENT_ABOVE * 255).any(1)
  np.testing.assert_allclose(result.fraction_different, differs.reshape(len(states), -1).mean(1))
  assert result.fraction_different[:2].max() == 0.0  # flipping the lowest bit changes no pixel by 25%
  assert result.histogram.sum() == len(states)


def test_spread_equals_the_mean_over_pairs_and_is_zero_for_copies():
  rng = np.random.default_rng(1)
  states = rng.integers(0, 256, (7, 4, 84, 84), dtype=np.uint8)
  x = states.astype(np.float64) / 255.0
  pairs = [((x[i] - x[j]) ** 2).mean() for i in range(7) for j in range(i + 1, 7)]
  np.testing.assert_allclose(spread(states), np.mean(pairs), rtol=1e-9)
  assert spread(np.repeat(states[:1], 5, axis=0)) < 1e-12
  # More states than max_states: a seeded subset, the same each call.
  assert spread(states, max_states=4) == spread(states, max_states=4) != spread(states)


def test_nearest_by_energy_and_oxygen_rule():
  np.testing.assert_array_equal(
    nearest_by_energy(np.array([0.1, 5.0]), np.array([4.0, 0.0, 9.0, 0.3]), k=2), [[1, 3], [0, 2]]
  )
  assert oxygen_at_death([40, 39, 39, 0, 0, 0]) == 39  # a collision: zeroed for the death animation
  assert oxygen_at_death([3, 2, 1, 0, 0, 0]) == 1  # suffocation: run down to empty
  assert oxygen_at_death([0, 0]) == 0


def test_rollout_evidence_records_every_life_loss_of_a_seaquest_game():
  agent = load_agent(Path(jaxprobe.__file__).parent / "assets" / "agents" / "seaquest")
  evidence = rollout_evidence(agent, 1, progress=False)
  summary, deaths = evidence["summary"], evidence["deaths"]
  assert summary["games"] == 1 and summary["life_losses"] == len(deaths) == 4  # 4 lives, game over
  steps = [d["step"] for d in deaths]
  assert steps == sorted(steps) and steps[-1] <= summary["mean_length"]
  assert [d["lives_left"] for d in deaths] == [3, 2, 1, 0]
  assert all(0 <= d["oxygen"] <= 64 and d["frame"].shape == (84, 84) for d in deaths)
  assert summary["deaths_with_low_oxygen"] == sum(d["oxygen"] <= 16 for d in deaths)


@pytest.fixture(scope="module")
def probe_runs(tmp_path_factory, pong_q_agent_path):
  root = tmp_path_factory.mktemp("report")
  agent = load_agent(pong_q_agent_path)
  collect(agent, root / "data", 64, num_envs=2, chunk_steps=32, progress=False)
  gen = tiny_generator(agent)
  save_generator(root / "gen", dataclasses.replace(gen, metadata=dict(gen.metadata, dataset=str(root / "data"))))
  for space in ("latent", "pixel"):
    config = ProbeConfig(space=space, num=4, steps=3)
    results = probe(agent, gen, ["T-", "T+"], config, progress=False)
    write_run(root / space, agent, gen, config, results, str(pong_q_agent_path), str(root / "gen"))
  return root


def test_report_renders_every_image_in_chromium(probe_runs, tmp_path):
  out = tmp_path / "report.html"
  assert (
    main(
      ["report", str(probe_runs / "latent"), str(probe_runs / "pixel"), "--out", str(out), "--rollouts", "1", "--quiet"]
    )
    == 0
  )
  text = out.read_text()
  # 2 targets x 2 spaces x (samples, histogram); Pong has no lives, so no frames before life losses.
  assert text.count("<img") == 8 and "http" not in text
  # The summary counts objects in the found states and in the real ones (collection.objects).
  real = open_dataset(probe_runs / "data")["colour"]
  want = objects.describe(real, objects.background(real))
  assert (
    f"<td>{want['objects_per_frame']:.2f}</td><td>{100 * want['share_with_object_of_size']['2-6']:.0f}%</td>" in text
  )
  assert text.count("frames with a 2-6 px object") == 1
  # One sentence per latent target at the top, from the measured numbers.
  assert text.count("<li>") == 2 and text.index("Weaknesses found") < text.index("<h2>Summary")
  chromium = shutil.which("chromium") or shutil.which("chromium-browser")
  if chromium is None:
    pytest.skip("Chromium is not installed (apt-get install chromium); the report was written but not rendered")
  # Chromium's DOM dump after load: every image decoded has a non-zero natural width.
  probe_page = tmp_path / "check.html"
  probe_page.write_text(
    text.replace(
      "</body>",
      "<script>document.title = [...document.images].every("
      "i => i.complete && i.naturalWidth > 0) ? 'ALL-IMAGES-OK' : 'BROKEN'"
      "</script></body>",
    )
  )
  flags = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    f"--user-data-dir={tmp_path / 'profile'}",
  ]
  dom = subprocess.run(
    [chromium, *flags, "--virtual-time-budget=5000", "--dump-dom", probe_page.as_uri()],
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert "<title>ALL-IMAGES-OK</title>" in dom.stdout, dom.stderr[-1500:]
  shot = tmp_path / "shot.png"
  subprocess.run(
    [chromium, *flags, f"--screenshot={shot}", "--window-size=1280,2000", out.as_uri()],
    capture_output=True,
    timeout=120,
  )
  assert shot.stat().st_size > 20_000


def test_weakness_sentence_says_found_or_not_from_the_numbers():
  real = np.linspace(0.0, 1.0, 101)  # 5th percentile: 0.05
  run = dict(target="T-", greedy_action=[2, 2, 1, 2], modes={"modes": 2, "share": [0.75, 0.25]})
  found = weakness_sentence(run, np.array([0.01, 0.02, 0.03, 0.5]), real, 3)
  assert found.startswith("T- (even the best action is valued low (doomed)): found: the median of the 4 found")
  assert "target value 0.025, against 0.050" in found and "97.0% of real states are less extreme" in found
  assert "action 2 (75% of them)" in found and "2 (75/25)" in found
  none = weakness_sentence(run, np.array([0.2, 0.3]), real, 3)
  assert "no weakness found for this target" in none and "target value 0.250" in none


def test_report_bad_inputs(probe_runs, tmp_path, capsys):
  other = tmp_path / "other_agent"
  spec = AgentSpec("q", 6, "Pong-v5")
  save_agent(other, Agent(spec, spec.init(jax.random.key(7))))
  cases = [
    ([str(probe_runs / "latent"), "--agent", str(other)], "was probed with another agent"),
    ([str(tmp_path / "missing")], "is not a probe run"),
    ([str(probe_runs / "latent"), "--out", str(tmp_path / "no" / "r.html")], "does not exist"),
  ]
  for args, message in cases:
    if "--out" not in args:
      args = args + ["--out", str(tmp_path / "r.html")]
    assert main(["report", *args, "--rollouts", "0", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.strip().count("\n") == 0, err
  assert not (tmp_path / "r.html").exists()


def test_demo_runs_end_to_end_on_given_assets(probe_runs, tmp_path, capsys, pong_q_agent_path):
  out = tmp_path / "demo"
  assert (
    main(
      [
        "demo",
        "--agent",
        str(pong_q_agent_path),
        "--generator",
        str(probe_runs / "gen"),
        "--out",
        str(out),
        "--num",
        "4",
        "--steps",
        "3",
        "--reference-states",
        "64",
        "--rollouts",
        "0",  # the report test plays rollouts
        "--quiet",
      ]
    )
    == 0
  )
  assert (out / "report.html").stat().st_size > 10_000 and (out / "demo.json").exists()
  assert "T+-" in (out / "report.html").read_text()
  assert main(["demo", "--game", "breakout", "--out", str(tmp_path / "d2"), "--quiet"]) == 2
  assert "unknown demo game 'breakout'" in capsys.readouterr().err


def test_oxygen_gauge_read_from_pixels_follows_the_ram_meter():
  # Real Seaquest colour frames against RAM[102] (64 = full): the reading the report applies to
  # synthesized states, which have no RAM.
  env = make_atari("Seaquest-v5", num_envs=4, seed=0, colour=True)
  env.reset()
  rng = np.random.default_rng(0)
  readings, ram = [], []
  for _ in range(700):
    actions = np.where(rng.random(4) < 0.3, 5, rng.integers(0, 18, 4))  # 5 = down: dive and use up air
    obs, _, _, _, info = env.step(actions)
    readings.append(read_gauge(obs.transpose(0, 2, 3, 1), GAUGES["Seaquest-v5"]["oxygen"]))
    ram.append(info["ram"][:, 102] / 64)
  readings, ram = np.concatenate(readings), np.concatenate(ram)
  assert ram.min() == 0 and ram.max() == 1 and np.mean((ram > 0.1) & (ram < 0.9)) > 0.2  # the range is covered
  assert np.median(np.abs(readings - ram)) <= 2 / 64 and np.corrcoef(readings, ram)[0, 1] > 0.98
  # Float colour in [0, 1] (the generator's output) reads the same.
  frames = obs.transpose(0, 2, 3, 1)
  np.testing.assert_allclose(
    read_gauge(frames / 255.0, GAUGES["Seaquest-v5"]["oxygen"]),
    read_gauge(frames, GAUGES["Seaquest-v5"]["oxygen"]),
    atol=1e-5,
  )
  assert gauge_summary(frames, "Pong-v5") == {}


def test_a_search_started_from_real_states_shows_its_start_first(probe_runs, tmp_path, pong_q_agent_path):
  args = ["probe", "--agent", str(pong_q_agent_path), "--generator", str(probe_runs / "gen"), "--target", "T-"]
  args += ["--num", "4", "--steps", "2", "--quiet"]
  data = str(probe_runs / "data")
  assert main([*args, "--init", "data", "--dataset", data, "--out", str(tmp_path / "from_data")]) == 0
  run = json.loads((tmp_path / "from_data" / "latent_Tminus" / "run.json").read_text())
  assert len(run["start_rows"]) == 4 and run["start_dataset"] == str(Path(data).absolute())
  agent, dataset = load_agent(pong_q_agent_path), open_dataset(data)
  bg = objects.background(dataset["colour"])
  section = lambda folder: target_section(folder / "latent_Tminus", agent, dataset, 1.0, 4, bg)
  with_start, plain = section(tmp_path / "from_data"), section(probe_runs / "latent")
  # Two columns of samples, each one 168-pixel frame and a 6-pixel gap wider.
  assert with_start["sheet"].shape[1] == plain["sheet"].shape[1] + 2 * (168 + 6)
  # The start frame is the dataset's state the row began from (first 168 x 168 of the first sample).
  best = run["best_first"][0]
  start = np.kron(np.asarray(dataset["colour"][run["start_rows"][best]])[..., -3:], np.ones((2, 2, 1), np.uint8))
  rows, cols = np.nonzero((with_start["sheet"][..., :3] == start[0, 0]).all(-1))
  assert any((with_start["sheet"][r : r + 168, c : c + 168] == start).all() for r, c in zip(rows[:200], cols[:200]))
