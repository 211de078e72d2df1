"""The whole pipeline on one agent, through the command line: what every imported agent must pass."""

from jaxprobe.cli import main

TINY_GENERATOR = [
  "latent_dim=8",
  "widths=[4,8,8,8]",
  "batch_size=4",
  "total_steps=2",
  "checkpoint_every=1",
  "log_every=1",
]


def run_whole_pipeline(agent: str, workdir) -> str:
  """saliency, collect, a 2-step train-generator, probe and report on `agent`, each asserted to exit 0,
  in `workdir`; returns the report's HTML."""
  w = str(workdir)
  steps = [
    ["saliency", "--agent", agent, "--frames", "2", "--out", f"{w}/saliency"],
    ["collect", "--agent", agent, "--frames", "32", "--num-envs", "2", "--out", f"{w}/data"],
    ["train-generator", "--config", "configs/generator_cpu.yaml", "--dataset", f"{w}/data", "--agent", agent]
    + ["--out", f"{w}/gen", *TINY_GENERATOR],
    ["probe", "--agent", agent, "--generator", f"{w}/gen/generator", "--num", "4", "--steps", "3"]
    + ["--out", f"{w}/probe"],
    ["report", f"{w}/probe", "--dataset", f"{w}/data", "--out", f"{w}/report.html", "--rollouts", "1"],
  ]
  for args in steps:
    assert main([*args, "--quiet"]) == 0, args
  return (workdir / "report.html").read_text()
