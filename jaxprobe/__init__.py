"""jaxprobe: find and visualize the weaknesses of deep RL agents (Rupprecht et al., ICLR 2020) in JAX."""

import os


def _prefer_xla_cpu_convolutions() -> None:
  """Keeps XLA:CPU from handing convolutions to YNNPACK, 2-4x slower on the CPUs we measured.

  benchmarks/README.md: with it, the Nature CNN parameter gradient (batch 256) went from
  203 to 155 ms. XLA reads XLA_FLAGS when its backend starts, so this must run before
  the first computation. Applied only on jaxlib 0.10, where the flag was measured (an
  unknown flag would abort XLA); set JAXPROBE_KEEP_XLA_FLAGS=1 to leave XLA_FLAGS alone.
  """
  flags = os.environ.get("XLA_FLAGS", "")
  if os.environ.get("JAXPROBE_KEEP_XLA_FLAGS") or "xla_cpu_experimental_ynn_fusion_type" in flags:
    return
  try:
    from importlib.metadata import version

    if not version("jaxlib").startswith("0.10."):
      return
  except Exception:  # jaxlib metadata unavailable: leave XLA as it is
    return
  os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_experimental_ynn_fusion_type=").strip()


_prefer_xla_cpu_convolutions()
