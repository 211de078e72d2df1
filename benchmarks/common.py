"""The harness every comparison script shares: timing, device and version strings, the table, results.csv.

Conventions (the same as conv_grad.py, so rows from all scripts can be read side by side):
- every variant is timed in interleaved rounds (each variant once per round, so a burst of
  other work on the machine hits all variants alike) after warm-up calls, and the median
  round is reported;
- PyTorch runs with as many threads as there are cores (2 here) and OMP_WAIT_POLICY=PASSIVE,
  so its idle OpenMP workers sleep instead of spinning on the cores the next JAX variant needs;
- rows are appended to results.csv with the columns of conv_grad.py: ms per call of ours and
  of the peer and their ratio peer / ours (> 1 means ours is faster);
- where a script can say so, it also reports the ceiling of its ratio on the machine it runs on
  (`ceiling`): the peer's time over a bound on jaxprobe's own time, measured in the same rounds.
  For arithmetic-bound work the bound is jaxprobe's FLOPs at the machine's fp32 matrix-product
  speed (`flop_ceiling`, `MatmulPeak`); for collection, the env path with no agent. A target
  above the ceiling cannot be reached on that machine.

Import this module before torch: the OpenMP policy is read when torch loads.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import importlib.metadata
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable, Sequence

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import jaxprobe  # noqa: E402,F401  (sets its XLA flags before JAX's backend starts)

# fp32 means fp32 on both sides: on GPUs JAX's default precision runs float32 matmuls and
# convolutions in TF32 (and PyTorch's cuDNN convolutions do too), which neither agrees with
# the other within 1e-4 nor is the computation the paper specifies.
# BENCH_PRECISION=tf32 times both sides in TF32 instead (JAX's default on GPUs), labelled in every row.
PRECISION = os.environ.get("BENCH_PRECISION", "fp32")
jax.config.update("jax_default_matmul_precision", "highest" if PRECISION == "fp32" else "default")

RESULTS = Path(__file__).with_name("results.csv")
COLUMNS = [
  "date",
  "benchmark",
  "case",
  "batch",
  "ours",
  "ours_ms",
  "peer",
  "peer_ms",
  "ratio_peer_over_ours",
  "device",
  "versions",
  "load_avg_1min",
]


@dataclasses.dataclass
class Row:
  """One comparison: seconds per call of ours and of a peer; `items` per call gives the throughput.

  `peer_s` is None when the peer could not run here; `note` then says why.
  """

  case: str
  batch: int
  ours: str
  ours_s: float
  peer: str
  peer_s: float | None
  items: float
  unit: str
  note: str = ""

  @property
  def ratio(self) -> float | None:
    return None if self.peer_s is None else self.peer_s / self.ours_s


def time_rounds(
  variants: dict[str, Callable[[], object]], rounds: int, warmup: int = 2, progress: bool = True
) -> dict[str, float]:
  """Median seconds per call of each variant, measured in interleaved rounds after warm-up.

  Every callable must block until its work is done (block_until_ready, cuda synchronize).
  With `progress`, each call's time is printed as soon as it is measured (one line per round),
  so a run cut short, as on a short accelerator lease, still leaves its numbers.
  """
  times = {k: [] for k in variants}
  for r in range(warmup + rounds):
    label = f"warm-up {r + 1}/{warmup}" if r < warmup else f"round {r - warmup + 1}/{rounds}"
    for i, (k, f) in enumerate(variants.items()):
      t = time.perf_counter()
      f()
      seconds = time.perf_counter() - t
      if r >= warmup:
        times[k].append(seconds)
      if progress:
        print(f"  {label}:" if i == 0 else ",", f"{k} {seconds * 1e3:,.1f} ms", end="", flush=True)
    if progress:
      print()
  return {k: statistics.median(v) for k, v in times.items()}


def blocking(f: Callable, *args) -> Callable[[], object]:
  """`f(*args)` as a no-argument call that returns when JAX's work is done, as time_rounds needs.

  Binding the arguments here, not in a lambda in a loop, keeps each variant on its own inputs.
  """
  return lambda: jax.block_until_ready(f(*args))


class MatmulPeak:
  """The machine's fp32 matrix-product speed (FLOP/s), which `ceiling` and scaling.py hold programs
  against, measured in the same interleaved rounds as they are (so both see the same load).

  A `time_rounds` variant: each call runs `products` jitted square products of side `size` one
  after another, each timed, and keeps the fastest. One product (about 10 ms at side 1024 on this
  CPU) ran anywhere from 10 to 195 GFLOP/s, slowest in the first calls after another large program:
  timing one per round made the peak too low, and programs came out at over 100% of it.
  `rate(rounds)` is the median of the last `rounds` calls' fastest products.
  Default side: 1024 on CPU (`scaling.py --matmul-size N` prints the rate of any other side), 8192
  on accelerators, which need large products to reach their peak.
  """

  def __init__(self, size: int | None = None, products: int = 8):
    size = size or (1024 if jax.default_backend() == "cpu" else 8192)
    self.a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
    self.b = jax.random.normal(jax.random.key(1), (size, size), jnp.float32)
    self.flops, self.products, self.best = 2.0 * size**3, products, []
    self.dot = jax.jit(jnp.dot)
    jax.block_until_ready(self.dot(self.a, self.b))  # compiled here, never in a timed call

  def __call__(self) -> None:
    fastest = float("inf")
    for _ in range(self.products):
      t = time.perf_counter()
      jax.block_until_ready(self.dot(self.a, self.b))
      fastest = min(fastest, time.perf_counter() - t)
    self.best.append(self.flops / fastest)

  def rate(self, rounds: int) -> float:
    return statistics.median(self.best[-rounds:])


def ceiling(row: Row, ideal_s: float, ideal: str, target: float, why: str) -> Row:
  """The largest ratio `row` can show on this machine: the peer's time over `ideal_s`, the time of
  a bound on jaxprobe's side (`ideal` names it, `why` says why it bounds). Printed with whether
  `target` lies within it; returned as a row (ours: the bound) for the table and results.csv."""
  top = row.peer_s / ideal_s
  verdict = "within it" if top >= target else "beyond it: not reachable here"
  print(
    f"ceiling, {row.case}, batch {row.batch}: {ideal} would take {ideal_s * 1e3:,.1f} ms a call ({why}): "
    f"at most {top:.2f}x {row.peer} here; target {target:g}x: {verdict}",
    flush=True,
  )
  return Row(f"{row.case}: ceiling", row.batch, ideal, ideal_s, row.peer, row.peer_s, row.items, row.unit)


def flop_ceiling(
  row: Row, flops: float | None, peak: float, target: float, work: str = "jaxprobe's FLOPs"
) -> list[Row]:
  """`ceiling` for arithmetic-bound work: `flops` a call at the matmul `peak` (FLOP/s, timed in the
  same rounds). Also says what share of that peak jaxprobe reaches. [] where XLA gave no count."""
  if flops is None or row.peer_s is None:
    return []
  print(
    f"{row.case}, batch {row.batch}: {work}, {flops / 1e9:,.2f} GFLOP a call; jaxprobe runs at "
    f"{flops / row.ours_s / 1e9:,.1f} GFLOP/s, {flops / row.ours_s / peak:.0%} of the matmul peak "
    f"({peak / 1e9:,.1f} GFLOP/s in the same rounds)"
  )
  return [
    ceiling(
      row,
      flops / peak,
      f"{work} at the matmul peak",
      target,
      "no fp32 program does this arithmetic faster than the machine's best matrix product",
    )
  ]


def timed(f: Callable[[], object]) -> tuple[object, float]:
  """(result, seconds) of one call: for compile times and one-shot end-to-end runs."""
  t = time.perf_counter()
  out = f()
  return out, time.perf_counter() - t


def setup_torch(threads: int | None = None):
  """Imports torch with the harness's thread settings; returns (torch, device)."""
  import torch

  torch.set_num_threads(threads or os.cpu_count())
  torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = PRECISION == "tf32"
  return torch, torch.device("cuda" if torch.cuda.is_available() else "cpu")


def torch_sync(device) -> None:
  if device.type == "cuda":
    import torch

    torch.cuda.synchronize(device)


def torch_blocking(device, f: Callable, *args) -> Callable[[], object]:
  """`f(*args)` as a no-argument call that returns when torch's work on `device` is done."""

  def run():
    f(*args)
    torch_sync(device)

  return run


def package_version(name: str) -> str:
  try:
    return importlib.metadata.version(name)
  except importlib.metadata.PackageNotFoundError:
    return "absent"


def versions(extra: Sequence[str] = ()) -> str:
  """jax, flax and torch (as conv_grad.py writes them), then the script's own peers."""
  names = ("jax", "flax", "torch", *extra)
  text = ", ".join(f"{n} {package_version(n)}" for n in names)
  text += f", {PRECISION}" if PRECISION != "fp32" else ""
  # jaxprobe's own XLA flag (YNNPACK off on jaxlib 0.10, jaxprobe/__init__.py) left out:
  return text + (", JAXPROBE_KEEP_XLA_FLAGS=1" if os.environ.get("JAXPROBE_KEEP_XLA_FLAGS") else "")


def cpu_model() -> str:
  """The CPU's model name (Linux), else what `platform` knows: a machine of the same name can be another
  CPU from one day to the next (an AMD EPYC on 2026-12-02, an Intel Xeon on 2026-12-03), and ratios move
  with it."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown CPU"


def device(torch_device=None) -> str:
  """Architecture, cores and the CPU's model; on an accelerator the device kinds of JAX and torch too."""
  base = f"{platform.machine()} x{os.cpu_count()} ({jax.default_backend()}"
  base += f": {cpu_model()}" if jax.default_backend() == "cpu" else f": {jax.devices()[0].device_kind}"
  if torch_device is not None and torch_device.type == "cuda":
    import torch

    base += f"; torch cuda: {torch.cuda.get_device_name(torch_device)}"
  return base + ")"


def header(extra: Sequence[str] = (), torch_device=None) -> str:
  return f"device: {device(torch_device)}; {versions(extra)}; load average {os.getloadavg()[0]:.1f}"


def _fmt_rate(row: Row, seconds: float | None) -> str:
  return "n/a" if seconds is None else f"{row.items / seconds:,.1f}"


def print_table(title: str, rows: Sequence[Row], extra: Sequence[str] = (), torch_device=None) -> None:
  """ours, peer, their throughputs and ratio per row, then the device and versions they ran on."""
  print(f"\n{title}")
  head = ["case", "batch", "ours", "ours/s", "peer", "peer/s", "ratio"]
  lines = [
    [
      r.case,
      str(r.batch),
      r.ours,
      _fmt_rate(r, r.ours_s),
      r.peer,
      _fmt_rate(r, r.peer_s),
      "n/a" if r.ratio is None else f"{r.ratio:.2f}x",
    ]
    for r in rows
  ]
  widths = [max(len(x) for x in col) for col in zip(head, *lines)]
  for line in [head, ["-" * w for w in widths], *lines]:
    print("  ".join(x.ljust(w) if i in (0, 2, 4) else x.rjust(w) for i, (x, w) in enumerate(zip(line, widths))))
  units = sorted({r.unit for r in rows})
  print(f"(/s: {', '.join(units)} per second; ratio = peer time / ours, > 1 means ours is faster)")
  for r in rows:
    if r.note:
      print(f"note, {r.case} / {r.peer}: {r.note}")
  print(f"device: {device(torch_device)}; versions: {versions(extra)}", flush=True)


def append_csv(
  benchmark: str, rows: Sequence[Row], extra: Sequence[str] = (), torch_device=None, path: Path | str = RESULTS
) -> None:
  """Appends rows in conv_grad.py's columns; a peer that could not run gets "n/a" and its reason."""
  path = Path(path)
  new = not path.exists()
  stamp = datetime.datetime.now().isoformat(timespec="seconds")
  load = os.getloadavg()[0]
  where, pkgs = device(torch_device), versions(extra)  # once a call, not once a row: both read files
  with path.open("a", newline="") as f:
    w = csv.writer(f)
    if new:
      w.writerow(COLUMNS)
    for r in rows:
      case = f"{r.case} ({r.note})" if r.note else r.case
      peer_ms = "n/a" if r.peer_s is None else f"{r.peer_s * 1e3:.2f}"
      ratio = "n/a" if r.ratio is None else f"{r.ratio:.2f}"
      w.writerow(
        [
          stamp,
          benchmark,
          case,
          r.batch,
          r.ours,
          f"{r.ours_s * 1e3:.2f}",
          r.peer,
          peer_ms,
          ratio,
          where,
          pkgs,
          f"{load:.1f}",
        ]
      )


def add_common_args(parser: argparse.ArgumentParser, rounds: int, peers: Sequence[str] = ()) -> None:
  """Flags every script has: --quick (a smoke run: tiny sizes, one round), rounds, threads, where rows go;
  with `peers`, --peers to time only some of them (all by default; parsed into a list)."""
  parser.add_argument(
    "--quick", action="store_true", help="tiny sizes and one round: checks that the script runs, measures nothing"
  )
  parser.add_argument("--rounds", type=int, default=rounds, help="interleaved timing rounds (median reported)")
  parser.add_argument("--torch-threads", type=int, default=0, help="PyTorch threads (default: all cores)")
  parser.add_argument(
    "--csv", default=None, help="results file to append to ('' for none; default results.csv, none with --quick)"
  )
  if peers:

    def choose(text: str) -> list[str]:
      chosen = [x for x in text.split(",") if x]
      unknown = sorted(set(chosen) - set(peers))
      if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"choose one or more of {','.join(peers)} (got {text!r})")
      return chosen

    parser.add_argument(
      "--peers",
      type=choose,
      default=",".join(peers),
      help=f"peers to time, comma-separated (default: all of {','.join(peers)})",
    )


def finish(
  benchmark: str,
  title: str,
  rows: Sequence[Row],
  args: argparse.Namespace,
  extra: Sequence[str] = (),
  torch_device=None,
) -> None:
  """Prints the table and appends the rows; quick runs append only where --csv says (marked "[quick]")."""
  print_table(title, rows, extra, torch_device)
  path = args.csv if args.csv is not None else ("" if args.quick else str(RESULTS))
  if path:
    append_csv(benchmark + (" [quick]" if args.quick else ""), rows, extra, torch_device, path)
    print(f"appended {len(rows)} rows to {path}")


def int_list(text: str) -> list[int]:
  return [int(x) for x in text.split(",") if x]


def relative_difference(a, b) -> float:
  """max |a - b| / max |b|: one number for "do two maps agree", insensitive to their scale."""
  import numpy as np

  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def check_agree(what: str, ours, theirs, tol: float) -> float:
  """relative_difference(ours, theirs), printed; stops the script unless it is within `tol`.

  Every script runs this before timing: a ratio between different computations means nothing.
  """
  diff = relative_difference(ours, theirs)
  print(f"check: {what}: max relative difference {diff:.2e} (tolerance {tol:g})", flush=True)
  if not diff <= tol:
    raise SystemExit(
      f"{what}: the two sides differ by {diff:.2e} > {tol:g}: they compute different things, "
      "so timing them would compare nothing"
    )
  return diff
