"""Generator training: each loss term against its formula, the ablations, what gets gradients, resume,
data parallelism and bad inputs."""

import dataclasses
import json
import shutil
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from test_agent_training import files_digest

from jaxprobe.agents import Agent, AgentSpec, save_agent
from jaxprobe.bundle import read_tree
from jaxprobe.cli import main
from jaxprobe.collection import objects
from jaxprobe.collection.dataset import open_dataset, sha256_file
from jaxprobe.collection.recorder import collect
from jaxprobe.commands.train_generator import train_generator as train
from jaxprobe.errors import UserError
from jaxprobe.generator import losses
from jaxprobe.generator import train as generator_train
from jaxprobe.generator.autoencoder import to_agent_view
from jaxprobe.generator.reconstruction import fidelity
from jaxprobe.generator.spec import GeneratorBundle, load_generator, save_generator
from jaxprobe.generator.train import GeneratorConfig, generator_spec, init_state, make_loss, make_train_step


class TinyAgent:  # the fields of an Agent that the loss reads
  spec = AgentSpec("q", 6, "Pong-v5")
  params = spec.init(jax.random.key(0))


AGENT = TinyAgent()
CONFIG = GeneratorConfig(latent_dim=8, widths=(4, 8, 8, 8), batch_size=4, lr=1e-3)


def batch(seed=0, n=4):
  rng = np.random.default_rng(seed)
  colour = rng.integers(0, 256, (n, 84, 84, 12), dtype=np.uint8)
  gray = rng.integers(0, 256, (n, 4, 84, 84), dtype=np.uint8)
  return dict(
    colour=colour,
    mask=rng.random((n, 84, 84), dtype=np.float32),
    q=np.asarray(AGENT.spec.apply(AGENT.params, gray)["q"]),
  )


def network_and_state(config):
  spec = generator_spec(config, AGENT)
  return spec.network(), init_state(spec, config, optax.adam(config.lr))


def test_loss_terms_equal_their_formulas():
  rng = np.random.default_rng(1)
  x, y = rng.random((3, 84, 84, 12)), rng.random((3, 84, 84, 12))
  m = rng.random((3, 84, 84))
  expected = ((1 + 4.0 * m[..., None]) * (x - y) ** 2).reshape(3, -1).sum(1)
  np.testing.assert_allclose(losses.reconstruction(x, y, m, 4.0), expected, rtol=1e-5)
  a, b = rng.normal(size=(3, 6)), rng.normal(size=(3, 6))
  np.testing.assert_allclose(losses.perception(a, b), ((a - b) ** 2).sum(1), rtol=1e-5)
  # Centred: only the differences between actions count; a shift of every output costs nothing.
  centre = lambda q: q - q.mean(1, keepdims=True)
  np.testing.assert_allclose(losses.perception(a, b, centred=True), ((centre(a) - centre(b)) ** 2).sum(1), rtol=1e-5)
  np.testing.assert_allclose(losses.perception(a, a + 3.0, centred=True), 0.0, atol=1e-5)
  # Softmax (distillation): tau^2 KL(p || q) of the two softmaxes at temperature tau.
  tau = 0.5
  p = np.exp(a / tau) / np.exp(a / tau).sum(1, keepdims=True)
  q = np.exp(b / tau) / np.exp(b / tau).sum(1, keepdims=True)
  kl = (p * np.log(p / q)).sum(1)
  np.testing.assert_allclose(losses.perception_softmax(a, b, tau), tau**2 * kl, rtol=1e-4)
  np.testing.assert_allclose(losses.perception_softmax(a, a + 3.0, tau), 0.0, atol=1e-6)
  # For differences much smaller than tau it is the p-weighted centred distance, halved.
  d = 1e-2 * rng.normal(size=(3, 6))
  weighted = (p * (d - (p * d).sum(1, keepdims=True)) ** 2).sum(1) / 2
  np.testing.assert_allclose(losses.perception_softmax(a, a + d, tau), weighted, rtol=5e-2)
  mean, logvar = rng.normal(size=(3, 8)), rng.normal(size=(3, 8))
  var = np.exp(logvar)  # KL(N(m, v) || N(0, 1)) per dimension: (v + m^2 - 1 - log v) / 2
  np.testing.assert_allclose(
    losses.kl_to_standard_normal(mean, logvar), 0.5 * (var + mean**2 - 1 - logvar).sum(1), rtol=1e-5
  )


def test_vae_ablation_is_a_plain_vae_loss():
  config = dataclasses.replace(CONFIG, ablation="vae")
  network, state = network_and_state(config)
  b, key = batch(), jax.random.key(3)
  loss = jax.jit(make_loss(network, AGENT, config))
  total, (_, terms) = loss(state.params, state.batch_stats, AGENT.params, b, key)
  # Independently: the same forward pass, then summed squared error + lambda * KL, batch mean.
  real = b["colour"].astype(np.float32) / 255.0
  out, _ = jax.jit(lambda v, x: network.apply(v, x, train=True, rngs={"latent": key}, mutable=["batch_stats"]))(
    {"params": state.params, "batch_stats": state.batch_stats}, real
  )
  sse = ((real - np.asarray(out["colour"])) ** 2).reshape(len(real), -1).sum(1)
  mean, logvar = np.asarray(out["mean"], np.float64), np.asarray(out["logvar"], np.float64)
  kl = 0.5 * (np.exp(logvar) + mean**2 - 1 - logvar).sum(1)
  np.testing.assert_allclose(total, np.mean(sse + config.lam * kl), rtol=1e-4)
  assert float(terms["L_a"]) == 0.0
  # Neither the saliency mask nor the agent enters a plain VAE's loss.
  other = dict(b, mask=np.zeros_like(b["mask"]), q=b["q"] + 100.0)
  total2, _ = loss(state.params, state.batch_stats, AGENT.params, other, key)
  np.testing.assert_allclose(total2, total, rtol=1e-6)


def test_mask_and_agent_are_constants_for_the_generator():
  network, state = network_and_state(CONFIG)
  loss = make_loss(network, AGENT, CONFIG)
  b = {k: jnp.asarray(v, jnp.float32) if k != "colour" else v for k, v in batch().items()}
  g_mask, g_agent, g_target = jax.grad(
    lambda m, p, q: loss(state.params, state.batch_stats, p, dict(b, mask=m, q=q), jax.random.key(0))[0],
    argnums=(0, 1, 2),
  )(b["mask"], AGENT.params, b["q"])
  for g in (g_mask, g_target, *jax.tree.leaves(g_agent)):
    assert not np.any(np.asarray(g)), "a constant of the generator's loss received a gradient"
  # ...while the mask does weight the loss, and the generator's params do get gradients.
  heavier = loss(state.params, state.batch_stats, AGENT.params, dict(b, mask=b["mask"] + 1), jax.random.key(0))[0]
  assert heavier > loss(state.params, state.batch_stats, AGENT.params, b, jax.random.key(0))[0]


@pytest.mark.parametrize("ablation", ["full", "vae"])
def test_train_step_lowers_the_loss_on_a_fixed_batch(ablation):
  config = dataclasses.replace(CONFIG, ablation=ablation)
  network, state = network_and_state(config)
  step = jax.jit(make_train_step(network, AGENT, config, optax.adam(config.lr)))
  b = batch()
  losses_seen = []
  for _ in range(15):
    state, metrics = step(state, AGENT.params, b)
    losses_seen.append(float(metrics["loss"]))
  # The tiny transposed-convolution decoder (the default) lowers it by about 5% in 15 steps (sub-pixel: 15%).
  assert np.all(np.isfinite(losses_seen)) and losses_seen[-1] < 0.97 * losses_seen[0], losses_seen
  assert int(state.step) == 15


# --- `train` and `jaxprobe train-generator`: resume, data parallelism, bad inputs -------------------

TINY_RUN = GeneratorConfig(
  latent_dim=8,
  widths=(4, 8, 8, 8),
  batch_size=4,
  total_steps=6,
  checkpoint_every=2,
  log_every=1,
  image_every=100,
  fit_prior=False,  # fitted in the command's test below and in test_prior.py
)
TINY_YAML = "latent_dim: 8\nwidths: [4, 8, 8, 8]\nbatch_size: 4\ntotal_steps: 2\ncheckpoint_every: 1\nlog_every: 1\n"


@pytest.fixture(scope="module")
def tiny_dataset(pong_q_agent, tmp_path_factory):
  out = tmp_path_factory.mktemp("gen_data") / "pong"
  collect(pong_q_agent, out, 64, num_envs=2, seed=3, progress=False)
  return open_dataset(out)


def params_of(run_dir):
  """The float32 parameters of a run's latest training checkpoint (the exported generator is bfloat16)."""
  steps = [int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit()]
  checkpointer = ocp.StandardCheckpointer()
  state = checkpointer.restore((run_dir / "checkpoints" / str(max(steps)) / "state").absolute())
  checkpointer.close()
  return state["params"]


def test_generators_are_stored_in_bfloat16_and_load_as_float32(tmp_path, pong_q_agent):
  spec = generator_spec(CONFIG, pong_q_agent)
  variables = spec.init(jax.random.key(0))
  save_generator(tmp_path / "gen", GeneratorBundle(spec, variables))
  stored = read_tree(tmp_path / "gen", "generator")
  assert {str(a.dtype) for a in jax.tree.leaves(stored["params"])} == {"bfloat16"}
  assert {str(a.dtype) for a in jax.tree.leaves(stored["batch_stats"])} == {"float32"}
  loaded = load_generator(tmp_path / "gen").variables
  want = dict(
    variables, params=jax.tree.map(lambda a: np.asarray(jnp.asarray(a, jnp.bfloat16), np.float32), variables["params"])
  )
  jax.tree.map(np.testing.assert_array_equal, loaded, want)
  assert {a.dtype for a in jax.tree.leaves(loaded)} == {np.dtype(np.float32)}


def test_resume_after_a_kill_continues_with_identical_params(tmp_path, pong_q_agent, tiny_dataset, monkeypatch):
  train(TINY_RUN, tiny_dataset, pong_q_agent, tmp_path / "straight", progress=False)
  # The same run killed after step 5: its last checkpoint is step 4, and step 5 is lost.
  real_batches = generator_train.batches

  def dies_after_five(*args, **kwargs):
    for i, b in enumerate(real_batches(*args, **kwargs)):
      if i == 5:
        raise KeyboardInterrupt
      yield b

  monkeypatch.setattr(generator_train, "batches", dies_after_five)
  with pytest.raises(KeyboardInterrupt):
    train(TINY_RUN, tiny_dataset, pong_q_agent, tmp_path / "killed", progress=False)
  monkeypatch.setattr(generator_train, "batches", real_batches)
  train(TINY_RUN, tiny_dataset, pong_q_agent, tmp_path / "killed", resume=True, progress=False)
  jax.tree.map(np.testing.assert_array_equal, params_of(tmp_path / "killed"), params_of(tmp_path / "straight"))
  steps = [int(row.split(",")[0]) for row in (tmp_path / "killed" / "curve.csv").read_text().splitlines()[1:]]
  assert steps == [1, 2, 3, 4, 5, 6]
  # The check at each checkpoint (objects.csv) is the same table as the uninterrupted run's.
  table = (tmp_path / "killed" / "objects.csv").read_text()
  assert table == (tmp_path / "straight" / "objects.csv").read_text()
  assert [int(row.split(",")[0]) for row in table.splitlines()[1:]] == [2, 4, 6] and "object_recall" in table


def test_data_parallel_step_on_four_virtual_devices_equals_one_device(pong_q_agent_path):
  script = textwrap.dedent(f"""
      import os
      os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
      import jaxprobe, jax, numpy as np, optax
      from jaxprobe.agents.checkpoint import load_agent
      from jaxprobe.generator.train import GeneratorConfig, generator_spec, init_state, make_train_step
      from jaxprobe.parallel import batch_mesh, batch_sharding, replicated
      agent = load_agent({str(pong_q_agent_path)!r})
      config = GeneratorConfig(latent_dim=8, widths=(4, 8, 8, 8), batch_size=8)
      spec = generator_spec(config, agent)
      # Plain SGD: Adam's first step is lr * sign(grad), which turns the float noise of a zero gradient
      # (a bias feeding batch norm) into a full step of either sign.
      state = init_state(spec, config, optax.sgd(0.01))
      step = jax.jit(make_train_step(spec.network(), agent, config, optax.sgd(0.01)))
      rng = np.random.default_rng(0)
      batch = dict(colour=rng.integers(0, 256, (8, 84, 84, 12), dtype=np.uint8),
                   mask=rng.random((8, 84, 84), dtype=np.float32), q=rng.normal(size=(8, 6)).astype(np.float32))
      one_state, one = step(state, agent.params, batch)
      mesh = batch_mesh()
      sharded = jax.device_put(batch, batch_sharding(mesh))
      four_state, four = step(jax.device_put(state, replicated(mesh)), jax.device_put(agent.params, replicated(mesh)),
                              sharded)
      assert mesh.size == 4 and len(sharded["colour"].sharding.device_set) == 4
      np.testing.assert_allclose(float(four["loss"]), float(one["loss"]), rtol=1e-5)
      # Each leaf's update agrees to 0.1% of its size; a leaf whose gradient is zero but for float noise (a
      # bias feeding batch norm) moves by ~1e-5 either way.
      for a, b, init in zip(jax.tree.leaves(jax.device_get(four_state.params)), jax.tree.leaves(one_state.params),
                            jax.tree.leaves(state.params)):
        assert np.linalg.norm(a - b) <= 1e-3 * np.linalg.norm(b - init) + 1e-4, (np.abs(a - b).max(), a.shape)
      for a, b in zip(jax.tree.leaves(jax.device_get(four_state.batch_stats)), jax.tree.leaves(one_state.batch_stats)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
      print("ok")
  """)
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
  assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, pong_q_agent, tiny_dataset):
  config = dataclasses.replace(TINY_RUN, lr=1e12, checkpoint_every=1, total_steps=50)
  with pytest.raises(
    UserError,
    match=r"the loss became non-finite at step (\d+) \(term (L_p|L_a|KL|loss)\); the last "
    r"good checkpoint \(step \d+\) is kept",
  ):
    train(config, tiny_dataset, pong_q_agent, tmp_path / "nan", progress=False)
  kept = params_of(tmp_path / "nan")
  assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(kept))


def test_train_generator_bad_inputs(tmp_path, capsys, pong_q_agent_path, tiny_dataset, pong_q_agent):
  config = tmp_path / "tiny.yaml"
  config.write_text(TINY_YAML)
  other_agent = tmp_path / "other-agent"
  save_agent(other_agent, Agent(pong_q_agent.spec, pong_q_agent.spec.init(jax.random.key(7)), {}))
  base = ["train-generator", "--config", str(config), "--dataset", str(tiny_dataset.path), "--quiet"]
  run = tmp_path / "run"
  assert main(base + ["--agent", str(pong_q_agent_path), "--out", str(run)]) == 0
  capsys.readouterr()
  # The finished run's generator carries its fitted latent prior.
  assert load_generator(run / "generator").metadata["latent_prior"]["states"] == len(tiny_dataset)
  before = files_digest(run)
  cases = [
    (["--agent", str(other_agent), "--out", str(tmp_path / "r2")], "was collected by another agent"),
    (
      ["--agent", str(pong_q_agent_path), "--out", str(run), "--resume", "latent_dim=16"],
      "different config (latent_dim: 8 there, 16 now)",
    ),
    (["--agent", str(pong_q_agent_path), "--out", str(tmp_path / "r3"), "ablation=gan"], "ablation"),
  ]
  for args, message in cases:
    assert main(base + args) == 2, args
    err = capsys.readouterr().err
    assert message in err and err.strip().count("\n") == 0, err
  assert files_digest(run) == before


def test_fidelity_bad_inputs(tmp_path, capsys, pong_q_agent_path, pong_q_agent, tiny_dataset):
  spec = generator_spec(CONFIG, pong_q_agent)
  save_generator(tmp_path / "gen", GeneratorBundle(spec, spec.init(jax.random.key(0))))
  other = Agent(pong_q_agent.spec, pong_q_agent.spec.init(jax.random.key(7)), {})
  save_generator(tmp_path / "other-gen", GeneratorBundle(generator_spec(CONFIG, other), spec.init(jax.random.key(0))))

  def dataset_copy(name, edit):
    path = tmp_path / name
    shutil.copytree(tiny_dataset.path, path)
    manifest = json.loads((path / "manifest.json").read_text())
    edit(path, manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path

  def another_game(path, manifest):
    manifest["env_id"] = manifest["agent"]["env_id"] = "Breakout-v5"

  def another_size(path, manifest):
    np.save(path / "colour.npy", np.zeros((len(tiny_dataset), 64, 64, 12), np.uint8))
    manifest["arrays"]["colour"]["shape"] = [len(tiny_dataset), 64, 64, 12]
    manifest["arrays"]["colour"]["sha256"] = sha256_file(path / "colour.npy")  # a whole dataset, of other images

  base = ["fidelity", "--agent", str(pong_q_agent_path), "--states", "8"]
  cases = [
    (["--generator", str(tmp_path / "other-gen"), "--dataset", str(tiny_dataset.path)], "trained for another agent"),
    (
      ["--generator", str(tmp_path / "gen"), "--dataset", str(dataset_copy("breakout", another_game))],
      "holds Breakout-v5 states, the agent plays Pong-v5",
    ),
    (
      ["--generator", str(tmp_path / "gen"), "--dataset", str(dataset_copy("small", another_size))],
      "holds states of shape (64, 64, 12), the generator draws (84, 84, 12)",
    ),
  ]
  for args, message in cases:
    assert main(base + args) == 2, args
    err = capsys.readouterr().err
    assert message in err and err.strip().count("\n") == 0, err
  assert main(base + ["--generator", str(tmp_path / "gen"), "--dataset", str(tiny_dataset.path)]) == 0
  assert "named objects: ball drawn in" in capsys.readouterr().out


def test_generator_checkpoints_that_do_not_fit_are_refused(tmp_path, capsys, pong_q_agent_path, pong_q_agent):
  spec = generator_spec(CONFIG, pong_q_agent)
  save_generator(tmp_path / "gen", GeneratorBundle(spec, spec.init(jax.random.key(0))))
  with pytest.raises(UserError, match="has latent_dim 8, the config says 100"):
    load_generator(tmp_path / "gen", expect=dataclasses.replace(spec, latent_dim=100))
  meta = json.loads((tmp_path / "gen" / "generator.json").read_text())
  meta["image_shape"] = [64, 64, 12]
  (tmp_path / "gen" / "generator.json").write_text(json.dumps(meta))
  assert (
    main(
      [
        "probe",
        "--agent",
        str(pong_q_agent_path),
        "--generator",
        str(tmp_path / "gen"),
        "--target",
        "T-",
        "--out",
        str(tmp_path / "p"),
        "--quiet",
      ]
    )
    == 2
  )
  err = capsys.readouterr().err
  assert "makes 64x64x12 images" in err and err.strip().count("\n") == 0, err


def test_fidelity_equals_a_direct_computation(pong_q_agent, tiny_dataset):
  spec = generator_spec(CONFIG, pong_q_agent)
  generator = GeneratorBundle(spec, spec.init(jax.random.key(1)))
  got = fidelity(pong_q_agent, generator, tiny_dataset, num=40, batch=16)
  idx = np.sort(np.random.default_rng(0).choice(len(tiny_dataset), 40, replace=False))
  colour, gray = tiny_dataset["colour"][idx], tiny_dataset["gray"][idx]
  recon = np.asarray(
    generator.spec.network().apply(generator.variables, colour / np.float32(255), train=False)["colour"]
  )
  view = np.asarray(to_agent_view(recon))
  real_q, recon_q = (np.asarray(pong_q_agent.spec.apply(pong_q_agent.params, v)["q"]) for v in (gray, view))
  error = ((recon - colour / 255.0) ** 2).mean(-1)
  salient = tiny_dataset["mask"][idx] > 0.5
  np.testing.assert_allclose(got["action_agreement"], np.mean(real_q.argmax(1) == recon_q.argmax(1)))
  # The references: the real state moved one pixel right, and plus noise of the reconstruction's RMS error.
  gray = gray.astype(np.float32)
  moved = np.concatenate([gray[..., :1], gray[..., :-1]], axis=-1)
  rms = np.sqrt(((view - gray) ** 2).mean(axis=(1, 2, 3), keepdims=True))
  draws = [jax.random.normal(jax.random.fold_in(jax.random.key(0), s), gray[s : s + 16].shape) for s in (0, 16, 32)]
  noisy = np.clip(gray + rms * np.concatenate(draws), 0, 255)
  for name, x in (("shifted_1px", moved), ("noise", noisy)):
    q = np.asarray(pong_q_agent.spec.apply(pong_q_agent.params, x)["q"])
    np.testing.assert_allclose(got[f"action_agreement_{name}"], np.mean(real_q.argmax(1) == q.argmax(1)))
    if name == "shifted_1px":  # the stable states: those whose action survives the move
      stable = real_q.argmax(1) == q.argmax(1)
      np.testing.assert_allclose(
        got["action_agreement_stable"], np.mean((real_q.argmax(1) == recon_q.argmax(1))[stable])
      )
  for scale, share in got["action_agreement_error_scaled"].items():  # the error shrunk at its shape
    q = np.asarray(pong_q_agent.spec.apply(pong_q_agent.params, gray + float(scale) * (view - gray))["q"])
    np.testing.assert_allclose(share, np.mean(real_q.argmax(1) == q.argmax(1)))
  assert list(got["action_agreement_error_scaled"]) == ["0.5", "0.25", "0.1"]
  np.testing.assert_allclose(got["L_a"], ((real_q - recon_q) ** 2).sum(1).mean(), rtol=1e-4)
  centred = (real_q - recon_q) - (real_q - recon_q).mean(1, keepdims=True)
  np.testing.assert_allclose(got["L_a_centred"], (centred**2).sum(1).mean(), rtol=1e-4)
  np.testing.assert_allclose(got["mse_salient"], error[salient].mean(), rtol=1e-4)
  np.testing.assert_allclose(got["mse_rest"], error[~salient].mean(), rtol=1e-4)
  assert got["states"] == 40 and 0 < got["salient_share"] < 1
  # Objects: the measure of collection.objects on the rounded reconstruction, against the dataset's background,
  # with Pong's named objects placed by the recorded RAM.
  want = objects.summarise(
    objects.compare(
      colour,
      np.round(recon * 255).astype(np.uint8),
      objects.background(tiny_dataset["colour"]),
      ram=tiny_dataset["ram"][idx],
      named=objects.NAMED_OBJECTS["Pong-v5"],
    )
  )
  assert {k: got[k] for k in want} == want and got["objects_by_size"]["2-6"] + got["objects_by_size"]["7-30"] > 0


# --- the object share of the reconstruction loss (issue 23) ---------------------------------------

BG = np.broadcast_to(np.array([144, 72, 17], np.uint8), (84, 84, 3))  # a background frame


def object_batch(n=4, seed=0):
  """Pong-like states: a brown background, a 2x2 white ball and a 2x8 green paddle per frame, moving."""
  rng = np.random.default_rng(seed)
  colour = np.tile(BG, (n, 1, 1, 4)).copy()
  for i in range(n):
    for f in range(4):
      y, x = rng.integers(10, 70, 2)
      colour[i, y : y + 2, x : x + 2, 3 * f : 3 * f + 3] = 236
      colour[i, y : y + 8, 76:78, 3 * f : 3 * f + 3] = (92, 186, 92)
  b = batch(n=n)
  return dict(b, colour=colour)


def test_object_weights_give_objects_their_share_and_keep_the_total():
  real = object_batch()["colour"].astype(np.float32) / 255.0
  w = np.asarray(losses.object_weights(real, BG / np.float32(255.0), 0.5))
  frames = real.reshape(4, 84, 84, 4, 3)
  on = (np.abs(frames - BG[:, :, None] / 255.0) > 0.25).any(-1)
  per_pixel = w[..., ::3]  # the three channels of a pixel share its weight
  np.testing.assert_allclose(per_pixel.sum((1, 2, 3)), 84 * 84 * 4, rtol=1e-5)
  np.testing.assert_allclose((per_pixel * on).sum((1, 2, 3)), 0.5 * 84 * 84 * 4, rtol=1e-5)
  # A state without objects keeps weight 1.
  flat = np.asarray(losses.object_weights(np.tile(BG / np.float32(255.0), (1, 1, 1, 4)), BG / np.float32(255.0), 0.5))
  np.testing.assert_array_equal(flat, 1.0)
  # With the reconstruction given, a smear it draws on the background weighs as an object pixel:
  # a trail of 6 white pixels off any real object, and a faint one (below 25%) that stays background.
  recon = real.copy()
  recon[0, 40, 2:8, 0:3] = 1.0
  recon[0, 50, 2:8, 0:3] = BG[0, 0] / 255.0 + 0.1
  both = np.asarray(losses.object_weights(real, BG / np.float32(255.0), 0.5, recon=recon))[..., ::3]
  k = on[0].sum() + 6
  np.testing.assert_allclose(both[0, 40, 2:8, 0], 0.5 * 84 * 84 * 4 / k, rtol=1e-5)
  np.testing.assert_allclose(both[0, 50, 2:8, 0], 0.5 * 84 * 84 * 4 / (84 * 84 * 4 - k), rtol=1e-5)
  np.testing.assert_allclose(both[0].sum(), 84 * 84 * 4, rtol=1e-5)
  np.testing.assert_allclose(both[1:], per_pixel[1:], rtol=1e-6)  # states drawn exactly are unchanged


def test_object_share_lowers_the_error_on_object_pixels_faster():
  b = object_batch()
  real = b["colour"].astype(np.float32) / 255.0
  on = np.repeat((np.abs(real.reshape(4, 84, 84, 4, 3) - BG[:, :, None] / 255.0) > 0.25).any(-1), 3, axis=-1)
  errors = {}
  for share in (0.0, 0.5):  # the default loss, then half of each state's weight on its objects
    config = dataclasses.replace(CONFIG, object_share=share, lr=3e-3)
    network, state = network_and_state(config)
    step = jax.jit(make_train_step(network, AGENT, config, optax.adam(config.lr), background=BG))
    for _ in range(40):
      state, _ = step(state, AGENT.params, b)
    out = network.apply(
      {"params": state.params, "batch_stats": state.batch_stats},
      real,
      train=True,
      rngs={"latent": jax.random.key(0)},
      mutable=["batch_stats"],
    )[0]
    errors[share] = float(((np.asarray(out["colour"]) - real) ** 2)[on].mean())
  assert errors[0.5] < 0.7 * errors[0.0], errors


def test_a_run_can_start_from_another_generator(tmp_path, pong_q_agent, tiny_dataset):
  train(dataclasses.replace(TINY_RUN, total_steps=2), tiny_dataset, pong_q_agent, tmp_path / "a", progress=False)
  start = load_generator(tmp_path / "a" / "generator").variables
  # A step too small to move anything: the new run's parameters are the ones it started from.
  config = dataclasses.replace(TINY_RUN, total_steps=1, lr=1e-30, init=str(tmp_path / "a" / "generator"))
  train(config, tiny_dataset, pong_q_agent, tmp_path / "b", progress=False)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-20), params_of(tmp_path / "b"), start["params"])
  assert load_generator(tmp_path / "b" / "generator").metadata["config"]["init"] == config.init
  # A network of another shape is refused before the run's folder exists.
  with pytest.raises(UserError, match=r"that generator has latent_dim 8, the config latent_dim 16; set them to match"):
    train(dataclasses.replace(config, latent_dim=16), tiny_dataset, pong_q_agent, tmp_path / "c", progress=False)
  assert not (tmp_path / "c").exists()
