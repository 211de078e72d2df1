"""Dopamine JAX checkpoints: written by dopamine-rl's own networks and Checkpointer, read by jaxprobe.

dopamine-rl (4.1.2) is installed without its dependencies (`make install`): TensorFlow, OpenAI
Baselines, gym and OpenCV do not install here or are not needed by the modules used, so
`_unneeded_modules` stands in for them while `dopamine.jax.networks` and
`dopamine.discrete_domains.checkpointer` are imported. The networks (flax) and the Checkpointer's
pickling are Dopamine's code as published; only `tf.io.gfile` becomes the local file system.
The bundles hold what the agents' `bundle_and_checkpoint` puts in them (`online_params`,
`target_params`, `optimizer_state` from optax, `state`, `training_steps`) plus the runner's
`current_iteration` and `logs`.
"""

import importlib.machinery
import os
import pickle
import sys
import types
from pathlib import Path

import flax.core
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax.training.checkpoints import convert_pre_linen
from whole_pipeline import run_whole_pipeline

from jaxprobe.agents import load_agent, save_agent
from jaxprobe.agents.agent import AgentSpec
from jaxprobe.agents.dopamine import convert_pre_linen as our_convert_pre_linen
from jaxprobe.cli import main
from jaxprobe.errors import UserError

UNNEEDED = ("tensorflow", "baselines", "cv2", "gym", "tensorflow_probability", "tf_slim", "ale_py", "pygame")


class _Anything(types.ModuleType):
  """A module whose every attribute exists: classes for capitalised names, modules otherwise."""

  __path__: list = []

  def __getattr__(self, name):
    if name.startswith("__"):
      raise AttributeError(name)
    value = type(name, (), {"__init__": lambda *a, **k: None}) if name[:1].isupper() else _Anything(name)
    setattr(self, name, value)
    return value

  def __call__(self, *args, **kwargs):
    return _Anything("result")


class _unneeded_modules:  # a meta path finder, used as the class itself
  @staticmethod
  def find_spec(name, path, target=None):
    return importlib.machinery.ModuleSpec(name, _unneeded_modules) if name.split(".")[0] in UNNEEDED else None

  @staticmethod
  def create_module(spec):
    return _Anything(spec.name)

  @staticmethod
  def exec_module(module):
    pass


class _GFile:
  """`tf.io.gfile.GFile` for writing: takes bytes or text in any mode, as TensorFlow's does."""

  def __init__(self, name, mode):
    self.file = open(name, mode.replace("b", "") + "b")

  def write(self, data):
    return self.file.write(data.encode() if isinstance(data, str) else data)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.file.close()


@pytest.fixture(scope="module")
def dopamine():
  """Dopamine's `networks` and `checkpointer` modules, its gfile writing local files."""
  sys.meta_path.insert(0, _unneeded_modules)
  try:
    from dopamine.discrete_domains import checkpointer
    from dopamine.jax import networks
  finally:  # Dopamine's modules keep their stand-ins; nothing else may find them
    sys.meta_path.remove(_unneeded_modules)
    for name in [n for n, m in sys.modules.items() if isinstance(m, _Anything)]:
      del sys.modules[name]
  checkpointer.tf = types.SimpleNamespace(
    errors=types.SimpleNamespace(NotFoundError=FileNotFoundError),
    io=types.SimpleNamespace(
      gfile=types.SimpleNamespace(
        GFile=_GFile,
        exists=os.path.exists,
        makedirs=lambda d: os.makedirs(d, exist_ok=True),
        glob=lambda pattern: __import__("glob").glob(pattern),
        remove=os.remove,
      )
    ),
  )
  return types.SimpleNamespace(networks=networks, checkpointer=checkpointer)


def states(n=6, seed=0):
  """Dopamine's states: unbatched (84, 84, 4) uint8 stacks, newest frame last."""
  return np.random.default_rng(seed).integers(0, 256, (n, 84, 84, 4), dtype=np.uint8)


def as_envpool(x):
  return np.transpose(x, (0, 3, 1, 2))  # (N, 4, 84, 84), the same frames


def write_checkpoint(dopamine, folder, params, iteration=3, frozen=True, protocol=None):
  """`ckpt.N` as Dopamine's runner writes it: the agent's bundle plus the runner's fields."""
  if frozen:  # flax before 0.8 returned FrozenDicts from init; the published agents' files hold them
    params = flax.core.FrozenDict(params)
  bundle = {
    "state": np.zeros((1, 84, 84, 4), np.uint8),
    "training_steps": 1234,
    "online_params": params,
    "optimizer_state": optax.adam(6.25e-5, eps=1.5e-4).init(params),
    "target_params": params,
    "current_iteration": iteration,
    "logs": {f"iteration_{iteration}": {"train_episode_returns": [np.float64(-21.0)]}},
  }
  if protocol is None:
    dopamine.checkpointer.Checkpointer(str(folder)).save_checkpoint(iteration, bundle)
  else:  # as the Checkpointer writes under a Python whose default protocol is `protocol` (3.14: 5)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"ckpt.{iteration}").write_bytes(pickle.dumps(bundle, protocol=protocol))
  return folder / f"ckpt.{iteration}"


def dopamine_outputs(network, params, x, **kwargs):
  return jax.vmap(lambda s: network.apply(params, s, **kwargs))(jnp.asarray(x))


def test_dqn_checkpoints_give_dopamines_q_values(dopamine, tmp_path):
  network = dopamine.networks.NatureDQNNetwork(num_actions=6)
  params = network.init(jax.random.PRNGKey(1), jnp.zeros((84, 84, 4), jnp.uint8))
  x = states()
  expected = dopamine_outputs(network, params, x).q_values
  # flax's FrozenDict (older Dopamine), a plain dict (flax >= 0.8); pickle protocol 5 (Python 3.14's default)
  for frozen, protocol in ((True, None), (False, None), (False, 5)):
    folder = tmp_path / f"frozen{frozen}{protocol}" / "Pong" / "1" / "checkpoints"
    write_checkpoint(dopamine, folder, params, frozen=frozen, protocol=protocol)
    agent = load_agent(folder.parent)  # the run's folder: its newest complete checkpoint
    assert agent.spec.env_id == "Pong-v5" and agent.spec.padding == "SAME"
    assert agent.metadata["source"] == "Dopamine JAX DQN" and agent.metadata["training_steps"] == 1234
    np.testing.assert_allclose(agent.spec.apply(agent.params, as_envpool(x))["q"], expected, atol=1e-5)


def test_c51_checkpoints_give_dopamines_distribution_and_q_values(dopamine, tmp_path):
  network = dopamine.networks.RainbowNetwork(num_actions=6, num_atoms=51)
  support = jnp.linspace(-10.0, 10.0, 51)  # JaxRainbowAgent's, vmax = 10
  params = network.init(jax.random.PRNGKey(2), jnp.zeros((84, 84, 4), jnp.uint8), support=support)
  x = states()
  expected = dopamine_outputs(network, params, x, support=support)
  file = write_checkpoint(dopamine, tmp_path / "c51" / "Pong" / "checkpoints", params, iteration=7)
  agent = load_agent(file)
  out = agent.spec.apply(agent.params, as_envpool(x))
  assert agent.spec.support == tuple(np.linspace(-10.0, 10.0, 51).tolist())
  np.testing.assert_allclose(out["probabilities"], expected.probabilities, atol=1e-5)
  np.testing.assert_allclose(out["q"], expected.q_values, atol=1e-5)
  save_agent(tmp_path / "saved", agent)  # kept as a jaxprobe agent, it stays a C51 one
  again = load_agent(tmp_path / "saved")
  assert again.spec == agent.spec
  np.testing.assert_allclose(again.spec.apply(again.params, as_envpool(x))["q"], expected.q_values, atol=1e-5)


def test_qr_dqn_checkpoints_give_dopamines_quantiles(dopamine, tmp_path):
  network = dopamine.networks.QuantileNetwork(num_actions=6, num_atoms=200)  # quantile.gin's
  params = network.init(jax.random.PRNGKey(3), jnp.zeros((84, 84, 4), jnp.uint8))
  x = states()
  expected = dopamine_outputs(network, params, x)
  file = write_checkpoint(dopamine, tmp_path / "runs" / "Pong" / "checkpoints", params)
  agent = load_agent(file)
  out = agent.spec.apply(agent.params, as_envpool(x))
  assert agent.spec.quantiles == 200
  np.testing.assert_allclose(out["quantiles"], expected.logits, atol=1e-5)
  np.testing.assert_allclose(out["q"], expected.q_values, atol=1e-5)


def test_iqn_checkpoints_give_dopamines_quantiles_at_the_fixed_levels(dopamine, tmp_path):
  network = dopamine.networks.ImplicitQuantileNetwork(num_actions=18, quantile_embedding_dim=64)
  params = network.init(
    jax.random.PRNGKey(4), jnp.zeros((84, 84, 4), jnp.uint8), num_quantiles=32, rng=jax.random.PRNGKey(5)
  )
  x = states(4)
  # Dopamine's network at the levels its key draws; jaxprobe draws them with key 0.
  expected = dopamine_outputs(network, params, x, num_quantiles=32, rng=jax.random.PRNGKey(0))
  file = write_checkpoint(dopamine, tmp_path / "iqn" / "Seaquest" / "checkpoints", params)
  agent = load_agent(file)
  out = agent.spec.apply(agent.params, as_envpool(x))
  assert agent.spec.tau_embedding == 64 and agent.spec.env_id == "Seaquest-v5" and len(agent.spec.taus) == 32
  np.testing.assert_allclose(out["quantiles"], np.swapaxes(expected.quantile_values, 1, 2), atol=1e-5)
  np.testing.assert_allclose(out["q"], expected.quantile_values.mean(1), atol=1e-5)
  np.testing.assert_allclose(expected.quantiles[0, :, 0], jax.random.uniform(jax.random.PRNGKey(0), (32, 1))[:, 0])
  assert agent.spec.features(agent.params, as_envpool(x)).shape == (4, 512)


def test_pre_linen_checkpoints_are_renamed_as_flax_renames_them(dopamine, tmp_path):
  network = dopamine.networks.NatureDQNNetwork(num_actions=6)
  params = network.init(jax.random.PRNGKey(6), jnp.zeros((84, 84, 4), jnp.uint8))["params"]
  # Before March 2021 Dopamine's agents (flax.nn) saved `online_network.params`: numpy arrays, no
  # `params` level, submodules counted across types.
  old_names = {"Conv_0": "Conv_0", "Conv_1": "Conv_1", "Conv_2": "Conv_2", "Dense_0": "Dense_3", "Dense_1": "Dense_4"}
  pre_linen = {old_names[k]: jax.tree.map(np.asarray, v) for k, v in params.items()}
  bundle = {"state": np.zeros((1, 84, 84, 4), np.uint8), "training_steps": 5}
  bundle |= {"online_params": pre_linen, "target_params": pre_linen}
  folder = tmp_path / "Pong" / "checkpoints"
  dopamine.checkpointer.Checkpointer(str(folder)).save_checkpoint(199, bundle)
  agent = load_agent(folder / "ckpt.199")
  assert "pre-Linen" in agent.metadata["source"]
  x = states(3)
  converted = {"params": convert_pre_linen(pre_linen)}  # what Dopamine's unbundle does with such a file
  expected = dopamine_outputs(network, converted, x).q_values
  np.testing.assert_allclose(agent.spec.apply(agent.params, as_envpool(x))["q"], expected, atol=1e-5)
  names = {f"{k}_{i}": i for k in ("Conv", "Dense", "LayerNorm") for i in range(12)}
  assert our_convert_pre_linen(names).keys() == dict(convert_pre_linen(names)).keys()


def test_a_checkpoint_that_would_run_code_is_refused_and_nothing_runs(tmp_path):
  marker = tmp_path / "ran"

  class Payload:
    def __reduce__(self):
      return (exec, (f"open({str(marker)!r}, 'w').write('x')",))

  folder = tmp_path / "Pong" / "checkpoints"
  folder.mkdir(parents=True)
  (folder / "ckpt.1").write_bytes(pickle.dumps({"online_params": {"params": Payload()}}))
  with pytest.raises(UserError, match=r"asks to run builtins\.exec when loaded.*nothing was run"):
    load_agent(folder / "ckpt.1")
  assert main(["evaluate-agent", "--agent", str(folder / "ckpt.1"), "--episodes", "1"]) == 2
  assert not marker.exists()
  # An object array would unpickle its elements with the full unpickler: refused before that.
  (folder / "ckpt.2").write_bytes(pickle.dumps({"online_params": np.array([None, 1], dtype=object)}))
  with pytest.raises(UserError, match="only numeric arrays are read"):
    load_agent(folder / "ckpt.2")


def crafted(tmp_path, name: str, kernel_opcodes: bytes) -> Path:
  """A DQN checkpoint for Pong whose Dense_1 kernel is replaced by hand-written pickle opcodes."""
  spec = AgentSpec("q", 6, "Pong-v5", padding="SAME")
  params = {k: dict(v) for k, v in jax.tree.map(np.asarray, spec.init(jax.random.key(0)))["params"].items()}
  params["Dense_1"]["kernel"] = "PLACEHOLDER"
  raw = pickle.dumps({"online_params": {"params": params}, "training_steps": 1}, protocol=3)
  folder = tmp_path / name / "Pong" / "checkpoints"
  folder.mkdir(parents=True)
  (folder / "ckpt.1").write_bytes(raw.replace(b"X\x0b\x00\x00\x00PLACEHOLDER", kernel_opcodes))
  return folder / "ckpt.1"


def test_what_a_crafted_checkpoint_could_do_with_the_allowed_names_is_refused(tmp_path):
  g = lambda module, name: b"c" + module.encode() + b"\n" + name.encode() + b"\n"
  text = lambda t: b"X" + len(t).to_bytes(4, "little") + t.encode()
  num = lambda i: b"J" + i.to_bytes(4, "little", signed=True)
  put, get = (lambda i: b"r" + i.to_bytes(4, "little")), (lambda i: b"j" + i.to_bytes(4, "little"))
  cases = {
    # numpy's constructor: a view of another array's buffer, which a later BUILD would free.
    "view": g("numpy", "ndarray") + b"(" + num(8) + b"\x85" + text("u1") + b"tR" + put(9) + b"0" + get(9),
    # a dtype whose state the file sets: a sub-array dtype that reads past an 8-byte scalar.
    "dtype": g("numpy._core.multiarray", "scalar")
    + b"("
    + g("numpy", "dtype")
    + b"("
    + text("f8")
    + b"\x89\x88tR"
    + b"("
    + num(3)
    + text("<")
    + b"("
    + text("f8")
    + num(1000)
    + b"\x85t"
    + b"NN"
    + num(-1)
    + num(-1)
    + num(0)
    + b"tb"
    + b"C\x08"
    + b"\0" * 8
    + b"\x86R",
    # an array whose state claims more bytes than it holds.
    "short": g("numpy._core.multiarray", "_reconstruct")
    + b"("
    + g("numpy", "ndarray")
    + num(0)
    + b"\x85"
    + b"C\x01b"
    + b"tR"
    + b"("
    + num(1)
    + b"("
    + num(512)
    + num(6)
    + b"t"
    + g("numpy", "dtype")
    + b"("
    + text("f4")
    + b"\x89\x88tR("
    + num(3)
    + text("<")
    + b"NNN"
    + num(-1)
    + num(-1)
    + num(0)
    + b"tb\x89C\x04abcdtb",
    # an object array, whose elements would be pickles again.
    "object": g("numpy", "dtype") + b"(" + text("O8") + b"\x89\x88tR",
  }
  messages = {
    "view": "not a readable Dopamine checkpoint",
    "dtype": "a dtype record is malformed",
    "short": "does not hold as many bytes as its shape needs",
    "object": "only numeric arrays are read",
  }
  for name, opcodes in cases.items():
    with pytest.raises(UserError, match=messages[name]):
      load_agent(crafted(tmp_path, name, opcodes))
  # A name with a line break in it stays one line.
  with pytest.raises(UserError) as refused:
    load_agent(crafted(tmp_path, "newline", text("os\nsystem") + text("x") + b"\x93"))
  assert "\n" not in str(refused.value)
  # The honest records of the same kinds load.
  kernel = np.arange(512 * 6, dtype=np.float32).reshape(512, 6)
  ok = pickle.dumps(kernel, protocol=3)[2:-1]  # the array's opcodes, without PROTO and STOP
  agent = load_agent(crafted(tmp_path, "honest", ok))
  np.testing.assert_array_equal(agent.params["params"]["Dense_1"]["kernel"], kernel)


def test_files_that_are_not_what_they_claim_are_refused_in_one_line(dopamine, tmp_path, capsys):
  network = dopamine.networks.NatureDQNNetwork(num_actions=7)
  params = network.init(jax.random.PRNGKey(1), jnp.zeros((84, 84, 4), jnp.uint8))
  wrong = write_checkpoint(dopamine, tmp_path / "wrong" / "Pong", params)
  good = write_checkpoint(
    dopamine,
    tmp_path / "good" / "Pong",
    dopamine.networks.NatureDQNNetwork(6).init(jax.random.PRNGKey(1), jnp.zeros((84, 84, 4), jnp.uint8)),
  )
  c51 = dopamine.networks.RainbowNetwork(num_actions=18, num_atoms=51)
  c51_18 = write_checkpoint(
    dopamine,
    tmp_path / "c51_18" / "Pong",
    c51.init(jax.random.PRNGKey(1), jnp.zeros((84, 84, 4), jnp.uint8), support=jnp.linspace(-10, 10, 51)),
  )
  truncated = tmp_path / "truncated" / "Pong" / "ckpt.3"
  truncated.parent.mkdir(parents=True)
  truncated.write_bytes(good.read_bytes()[:4000])
  # A TensorFlow agent's run: tf_ckpt-N files beside a ckpt.N without online_params.
  tf_run = tmp_path / "tf" / "Pong" / "checkpoints"
  dopamine.checkpointer.Checkpointer(str(tf_run)).save_checkpoint(
    4, {"state": np.zeros((1, 84, 84, 4), np.uint8), "eval_mode": False, "training_steps": 9}
  )
  for suffix in ("index", "meta", "data-00000-of-00001"):
    (tf_run / f"tf_ckpt-4.{suffix}").write_bytes(b"\0")
  cases = {
    str(wrong): "its last layer has 7 outputs, which is neither Pong-v5's 6 Q-values nor 51 atoms",
    str(c51_18): "its last layer has 918 outputs",  # an 18-action C51 is not read as a 153-atom one
    str(truncated): "is not a readable Dopamine checkpoint",
    str(tf_run.parent): "is a Dopamine TensorFlow agent's checkpoint (its weights are in tf_ckpt-4 files)",
    str(tf_run / "tf_ckpt-4.index"): "is a Dopamine TensorFlow agent's checkpoint",
  }
  for path, message in cases.items():
    assert main(["evaluate-agent", "--agent", path, "--episodes", "1"]) == 2, path
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err, err
  nameless = tmp_path / "run" / "checkpoints"
  nameless.mkdir(parents=True)
  (nameless / "ckpt.3").write_bytes(good.read_bytes())
  with pytest.raises(UserError, match="does not say which game it plays: pass --env"):
    load_agent(nameless.parent)
  assert load_agent(nameless.parent, env_id="Pong-v5").spec.num_actions == 6


def test_an_imported_dopamine_agent_goes_through_the_whole_pipeline(dopamine, tmp_path):
  network = dopamine.networks.RainbowNetwork(num_actions=6, num_atoms=51)
  params = network.init(jax.random.PRNGKey(2), jnp.zeros((84, 84, 4), jnp.uint8), support=jnp.linspace(-10, 10, 51))
  write_checkpoint(dopamine, tmp_path / "c51" / "Pong" / "1" / "checkpoints", params)
  assert "Dopamine JAX C51" in run_whole_pipeline(str(tmp_path / "c51" / "Pong" / "1"), tmp_path)
