"""The probe: energies go down for every target, determinism, sharding, user targets, bad inputs."""

import dataclasses
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxprobe.agents.agent import fingerprint
from jaxprobe.agents.checkpoint import load_agent
from jaxprobe.cli import main
from jaxprobe.collection.dataset import Dataset, open_dataset
from jaxprobe.collection.recorder import collect
from jaxprobe.errors import UserError
from jaxprobe.generator.prior import standard_normal
from jaxprobe.generator.spec import GeneratorBundle, GeneratorSpec, save_generator
from jaxprobe.search.spaces import ProbeConfig, initial_variables, probe, start_rows
from jaxprobe.search.targets import get_target

TINY = dict(latent_dim=8, widths=(4, 8, 8, 8))


def tiny_generator(agent, env_id=None):
  spec = GeneratorSpec(**TINY, env_id=env_id or agent.spec.env_id, agent_fingerprint=fingerprint(agent.params))
  # N(0, I) stored as its fitted prior: the search needs one, and fitting costs seconds.
  prior = standard_normal(spec.latent_dim)
  return GeneratorBundle(spec, spec.init(jax.random.key(0)), {"ablation": "untrained test generator"}, prior)


@pytest.fixture(scope="module")
def agent(pong_q_agent_path):
  return load_agent(pong_q_agent_path)


@pytest.fixture(scope="module")
def generator(agent):
  return tiny_generator(agent)


CONFIG = ProbeConfig(num=6, steps=8, lr=0.2, alpha=0.01)


@pytest.mark.parametrize("space", ["latent", "pixel"])
def test_every_target_goes_down(agent, generator, space):
  names = ["T+", "T-", "T+-", "S+", "S-", "S+-", "action:1", "not-action:2"]
  names = names if space == "latent" else names[1:3]  # the pixel baseline: the energy is the same code
  results = probe(agent, generator, names, dataclasses.replace(CONFIG, space=space), progress=False)
  for r in results:
    assert r.curve[-1] < r.curve[0], r.target  # the trajectory itself improves on average
    assert r.energy_end.mean() < r.energy_start.mean(), r.target
    assert r.gray.shape == (6, 4, 84, 84) and r.gray.dtype == np.uint8
    assert r.colour.shape == (6, 84, 84, 12) and r.greedy.shape == (6,)


def test_same_seed_same_states_and_python_equals_scan(agent, generator):
  a, b = (
    probe(agent, generator, ["T-"], dataclasses.replace(CONFIG, loop=loop), progress=False)[0]
    for loop in ("python", "scan")
  )
  np.testing.assert_allclose(a.variables, b.variables, rtol=1e-4, atol=1e-5)
  again = probe(agent, generator, ["T-"], dataclasses.replace(CONFIG, loop="python"), progress=False)[0]
  np.testing.assert_array_equal(a.variables, again.variables)
  other = probe(agent, generator, ["T-"], dataclasses.replace(CONFIG, seed=1), progress=False)[0]
  assert not np.allclose(a.variables, other.variables)


def test_bad_inputs(agent, generator):
  with pytest.raises(UserError, match="unknown target 'T0'"):
    probe(agent, generator, ["T0"], CONFIG, progress=False)
  with pytest.raises(UserError, match="action 6 is out of range"):
    probe(agent, generator, ["action:6"], CONFIG, progress=False)
  with pytest.raises(UserError, match="trained on Breakout-v5 but the agent plays Pong-v5"):
    probe(agent, tiny_generator(agent, "Breakout-v5"), ["T-"], CONFIG, progress=False)
  # The config refuses values out of range when it is built (from flags or Python alike).
  for field, value, allowed in (
    ("num", 0, "an integer >= 1"),
    ("steps", 0, "an integer >= 1"),
    ("diversity", -1.0, "a finite number >= 0"),
    ("diversity", float("nan"), "a finite number >= 0"),
    ("alpha", float("inf"), "a finite number >= 0"),
    ("lr", -1.0, "a finite number > 0"),
    ("patience", -3, "an integer >= 0"),
    ("tau", 0.0, "a finite number > 0"),
  ):
    with pytest.raises(UserError, match=f"--{field} must be {allowed}, got {value}"):
      dataclasses.replace(CONFIG, **{field: value})
  with pytest.raises(UserError, match="no fitted latent prior: fit one with `jaxprobe fit-prior --generator"):
    probe(agent, dataclasses.replace(generator, prior=None), ["T-"], CONFIG, progress=False)


def test_cli_with_a_user_target_writes_everything(agent, generator, tmp_path, monkeypatch, capsys, pong_q_agent_path):
  save_generator(tmp_path / "gen", generator)
  (tmp_path / "my_energy.py").write_text("def right_paddle_low(out):\n  return out['q'][3] - out['q'][2]\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  out = tmp_path / "run"
  code = main(
    [
      "probe",
      "--agent",
      str(pong_q_agent_path),
      "--generator",
      str(tmp_path / "gen"),
      "--target",
      "T-",
      "--target",
      "my_energy:right_paddle_low",
      "--num",
      "4",
      "--steps",
      "3",
      "--out",
      str(out),
      "--quiet",
    ]
  )
  assert code == 0
  meta = json.loads((out / "probe.json").read_text())
  assert [t["target"] for t in meta["targets"]] == ["T-", "my_energy:right_paddle_low"]
  for t in meta["targets"]:
    folder = out / t["folder"]
    for f in ("best.png", "energy.png", "run.json", "gray.npy", "colour.npy", "latents.npy"):
      assert (folder / f).exists(), f
    run = json.loads((folder / "run.json").read_text())
    assert len(run["energy_end"]) == 4 and run["state_steps_per_s"] > 0
    assert sum(run["modes"]["share"]) == pytest.approx(1.0) and len(run["mode_of_state"]) == 4
  assert "energy before" in capsys.readouterr().out
  assert (
    main(
      [
        "probe",
        "--agent",
        str(pong_q_agent_path),
        "--generator",
        str(tmp_path / "gen"),
        "--target",
        "Tx",
        "--out",
        str(tmp_path / "r2"),
        "--quiet",
      ]
    )
    == 2
  )
  assert "unknown target 'Tx'; known:" in capsys.readouterr().err
  assert not (tmp_path / "r2").exists()  # a refused run leaves no folder behind


@pytest.mark.slow  # the search-level equality runs in every `make test` (test_search.py)
def test_sharded_probe_on_four_virtual_devices_equals_one_device(pong_q_agent_path):
  script = textwrap.dedent(f"""
      import os
      os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
      import dataclasses, jax, numpy as np
      from jaxprobe.agents.checkpoint import load_agent
      from jaxprobe.parallel import batch_mesh, batch_sharding
      from jaxprobe.search.spaces import ProbeConfig, initial_variables, make_energy
      from jaxprobe.search.optimise import OptimiseConfig, optimise
      from jaxprobe.search.targets import get_target
      sys_path = {str(Path(__file__).parent)!r}
      import sys; sys.path.insert(0, sys_path)
      from test_probe import tiny_generator
      agent = load_agent({str(pong_q_agent_path)!r})
      gen = tiny_generator(agent)
      cfg = ProbeConfig(num=8, steps=5, lr=0.2)
      energy = make_energy(agent, get_target("T-", "q", 6), cfg, gen)
      v0 = initial_variables(agent, gen, cfg)
      opt = OptimiseConfig(steps=5, lr=0.2)
      one = optimise(energy, v0, opt, jax.random.key(1))
      four = optimise(energy, v0, opt, jax.random.key(1), sharding=batch_sharding(batch_mesh(4)))
      np.testing.assert_allclose(one.v, four.v, rtol=1e-4, atol=1e-5)
      print("ok", len(jax.devices()))
  """)
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
  assert result.returncode == 0 and "ok 4" in result.stdout, result.stderr[-3000:]


@pytest.fixture(scope="module")
def states(agent, tmp_path_factory):
  """64 states of the agent's game, to start searches from."""
  out = tmp_path_factory.mktemp("probe_data") / "pong"
  collect(agent, out, 64, num_envs=2, seed=4, progress=False)
  return open_dataset(out)


def test_starts_from_data_are_the_standardised_encodings_of_the_chosen_states(agent, generator, states):
  target = get_target("T-", "q", 6, 1.0)
  config = dataclasses.replace(CONFIG, init="data", num=6)
  rows = start_rows(agent, target, config, states)
  np.testing.assert_array_equal(rows, np.random.default_rng(config.seed).choice(64, 6, replace=False))
  start = np.asarray(initial_variables(agent, generator, config, rows, states))
  mean, std = generator.latent_coordinates()
  colour = np.asarray(states["colour"][rows]) / np.float32(255)
  z = generator.spec.network().apply(generator.variables, colour, method="encode")[0]
  np.testing.assert_allclose(start, (np.asarray(z) - mean) / std, rtol=1e-5, atol=1e-5)
  # data-nearest: the states whose recorded outputs have the lowest target energy, lowest first.
  nearest = start_rows(agent, target, dataclasses.replace(config, init="data-nearest"), states)
  energy = np.asarray(jax.vmap(target.energy)({"q": np.asarray(states["q"])}))
  np.testing.assert_array_equal(nearest, np.argsort(energy, kind="stable")[:6])
  # A search started from data records the rows and still lowers the energy.
  (result,) = probe(agent, generator, ["T-"], dataclasses.replace(config, init="data-nearest"), False, states)
  np.testing.assert_array_equal(result.start_rows, nearest)
  assert result.energy_end.mean() < result.energy_start.mean()


def test_data_start_bad_inputs(agent, generator, states):
  data = dataclasses.replace(CONFIG, init="data")
  with pytest.raises(UserError, match="--init data needs --dataset"):
    probe(agent, generator, ["T-"], data, progress=False)
  with pytest.raises(UserError, match="pixel space starts from noise"):
    probe(agent, generator, ["T-"], dataclasses.replace(data, space="pixel"), False, states)
  manifest = dict(states.manifest, agent=dict(states.manifest["agent"], env_id="Breakout-v5"))
  other_game = Dataset(states.path, manifest, states.arrays)
  with pytest.raises(UserError, match="holds Breakout-v5 states, the agent plays Pong-v5"):
    probe(agent, generator, ["T-"], data, False, other_game)
