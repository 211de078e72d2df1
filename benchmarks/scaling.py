"""Latent search scaling: throughput vs batch size and vs devices, and FLOP/s against the matmul peak (issue 8).

Three measurements of jaxprobe's own search step (search_setup.py: `make_energy`, `make_step`,
driven as `optimise` drives it here), generator in the "subpixel" layout of the
shipped Pong generators (`--layout transpose`: the CPU config's), target T+-, fp32:
- batch curve: latent steps/s for batches 64 to 8192 on one device; batches above --chunk run
  as chunks of --chunk rows one after another, as `optimise` runs them;
- achieved FLOP/s of each batch: XLA's own count of the compiled step's operations
  (`compiled.cost_analysis()`) per second, against the fp32 matrix product throughput
  measured in the same rounds (`common.MatmulPeak`: the fastest of eight jitted `jnp.dot`s of two --matmul-size
  square matrices, 1024 on CPU, timed interleaved with the search, so both see the same load on a
  shared machine). In the table
  the "peer" of these rows is the time the same FLOPs take at that throughput, so the ratio
  is the fraction of the peak reached (target >= 0.40);
- device curve: one batch sharded over 1 to 8 devices as `jaxprobe probe` shards it
  (`jaxprobe.parallel.batch_mesh`). On CPU each count runs in a subprocess with
  XLA_FLAGS=--xla_force_host_platform_device_count=N (virtual devices sharing this
  machine's cores; 1 device in this process); on an accelerator the real devices, as many as
  there are. The peer of these rows is the same search on one device: the ratio is the speed-up.
- process curve: the same batch over 1, 2 and 4 processes of one CPU device each, joined by
  JAX's distributed runtime on the loopback address as `jaxprobe --processes N` joins them
  (docs/hosts.md; cross-process collectives through gloo). The peer is the same search in one
  process with one device. On one machine the processes share its cores, so the rows show what
  the multi-process runtime costs, not a speed-up; on a pod each process has a host of its own.
The numerical agreement of this search with a PyTorch reference is latent_search.py's check;
here the sharded runs must give the energies of the one-device run (--tolerance).

  .venv/bin/python benchmarks/scaling.py [--batches 64,256,1024] [--devices 1,2,4,8] [--processes 1,2,4] [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys

import common  # noqa: I001  (first: sets the XLA and OpenMP settings)
import jax
import jax.numpy as jnp
import search_setup

from jaxprobe.hosts import to_host
from jaxprobe.parallel import batch_mesh, batch_sharding

TARGET = "T+-"


def setup(layout: str):
  """jaxprobe's T+- energy over a random-init agent and generator; the same in every process."""
  config = search_setup.probe_config(TARGET)
  agent = search_setup.make_agent()
  bundle = search_setup.make_generator(upsample=layout)
  return search_setup.energy_fn(agent, bundle, TARGET, config), config


def available_bytes() -> int | None:
  """The host memory the kernel says is available now (Linux), or None."""
  try:
    with open("/proc/meminfo") as f:
      return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
  except (OSError, StopIteration):
    return None


def chunked_runner(energy, config, batch: int, chunk: int, steps: int, sharding=None):
  """(run, flops per call, the SearchRunner of one chunk): `steps` steps of `batch` rows, `chunk` rows at a time."""
  rows = min(batch, chunk)
  calls = math.ceil(batch / rows)
  v0 = jnp.asarray(search_setup.start_latents(rows))
  if sharding is not None:
    v0 = jax.device_put(v0, sharding)
  runner = search_setup.search_runner(energy, v0, steps, config)

  def run():
    for _ in range(calls):
      state = runner.run()
    return state

  flops = None if runner.flops_per_step is None else runner.flops_per_step * steps * calls
  return run, flops, runner


def batch_rows(energy, config, args) -> list[common.Row]:
  matmul = common.MatmulPeak(args.matmul_size)
  rows = []
  for batch in common.int_list(args.batches):
    run, flops, runner = chunked_runner(energy, config, batch, args.chunk, args.steps)
    loop, free = runner.loop, available_bytes()
    if jax.default_backend() == "cpu" and free is not None and runner.temp_bytes > free:
      print(
        f"batch {batch}: skipped: its compiled step needs {runner.temp_bytes / 1e9:.1f} GB of temporaries, "
        f"the machine has {free / 1e9:.1f} GB available now",
        flush=True,
      )
      continue
    # Compiled ahead, so a warm-up call would absorb no compilation: skipped where one call is long.
    warmup = 1 if batch < args.chunk or jax.default_backend() != "cpu" else 0
    times = common.time_rounds({"search": run, "matmul": matmul}, args.rounds, warmup=warmup)
    seconds, peak = times["search"], matmul.rate(args.rounds)
    achieved = None if flops is None else flops / seconds
    print(
      f"batch {batch}: compiled in {runner.compile_s:.1f} s ({loop} loop); {batch * args.steps / seconds:,.1f} "
      f"latent steps/s; "
      + (
        "no FLOP count"
        if achieved is None
        else f"{achieved / 1e9:,.1f} GFLOP/s = {achieved / peak:.1%} of the matmul peak, "
        f"{peak / 1e9:,.1f} GFLOP/s in the same rounds"
      ),
      flush=True,
    )
    rows.append(
      common.Row(
        f"latent search {TARGET}, steps {args.steps}, vs matmul peak",
        batch,
        f"jaxprobe ({loop} loop, chunk {min(batch, args.chunk)})",
        seconds,
        f"fp32 matmul at {peak / 1e9:,.0f} GFLOP/s, same FLOPs",
        None if flops is None else flops / peak,
        batch * args.steps,
        "latent steps",
        "" if flops is not None else "XLA gave no FLOP count",
      )
    )
  return rows


def measure_devices(energy, config, n: int, batch: int, steps: int, rounds: int) -> dict:
  """Seconds per call and final energies of `batch` rows sharded over the first `n` devices."""
  sharding = batch_sharding(batch_mesh(n)) if n > 1 else None
  run, _, runner = chunked_runner(energy, config, batch, batch, steps, sharding)
  seconds = common.time_rounds({"search": run}, rounds, warmup=1)["search"]
  return dict(
    devices=n,
    seconds=seconds,
    compile_s=runner.compile_s,
    loop=runner.loop,
    energy=to_host(run().best_energy).tolist(),  # every process's rows
  )


def worker_result(n: int, args) -> dict:
  """Runs `--worker n` in a subprocess that sees n virtual CPU devices; its JSON line back."""
  env = dict(os.environ, XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={n}")
  cmd = [
    sys.executable,
    __file__,
    "--worker",
    str(n),
    "--device-batch",
    str(args.device_batch),
    "--steps",
    str(args.steps),
    "--rounds",
    str(args.rounds),
    "--layout",
    args.layout,
  ]
  done = subprocess.run(cmd, env=env, capture_output=True, text=True)
  if done.returncode != 0:
    raise SystemExit(f"the {n}-device run failed:\n{done.stderr[-2000:]}")
  return json.loads(done.stdout.strip().splitlines()[-1])


def free_port() -> int:
  import socket

  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def process_result(processes: int, args) -> dict:
  """The device-batch search over `processes` processes of one CPU device each; process 0's JSON line."""
  port = free_port()
  env = dict(os.environ, JAX_NUM_CPU_DEVICES="1")
  env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f)
  common_args = ["--device-batch", str(args.device_batch), "--steps", str(args.steps), "--rounds", str(args.rounds)]
  workers = [
    subprocess.Popen(
      [sys.executable, __file__, "--process-worker", f"{processes},{i},{port}", "--layout", args.layout, *common_args],
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in range(processes)
  ]
  outputs = [w.communicate(timeout=1800) for w in workers]
  for w, (_, err) in zip(workers, outputs):
    if w.returncode != 0:
      raise SystemExit(f"the {processes}-process run failed:\n{err[-2000:]}")
  return json.loads(outputs[0][0].strip().splitlines()[-1])


def curve_rows(results: list[dict], count: str, case: str, ours: str, peer: str, args) -> list[common.Row]:
  """Rows of a device or process curve (`count`: the key of each result's count), each against the
  first result, which must be of count 1 and whose energies every other must give."""
  one = results[0]
  if one[count] != 1:
    raise SystemExit(f"--{count} must start at 1: the other counts are compared with it")
  for r in results:
    print(
      f"{r[count]} {count}: compiled in {r['compile_s']:.1f} s; "
      f"{args.device_batch * args.steps / r['seconds']:,.1f} latent steps/s",
      flush=True,
    )
  for r in results[1:]:
    common.check_agree(f"energies on {r[count]} {count} vs 1", r["energy"], one["energy"], args.tolerance)
  return [
    common.Row(
      f"latent search {TARGET}, steps {args.steps}, {r[count]} {case}",
      args.device_batch,
      f"jaxprobe on {r[count]} {ours} ({r['loop']} loop)",
      r["seconds"],
      peer,
      one["seconds"],
      args.device_batch * args.steps,
      "latent steps",
    )
    for r in results
  ]


def process_rows(args) -> list[common.Row]:
  if not args.processes:  # --processes '': none
    return []
  results = [process_result(n, args) for n in common.int_list(args.processes)]
  return curve_rows(results, "processes", "processes x 1 CPU device", "process(es)", "the same in 1 process", args)


def device_rows(energy, config, args) -> list[common.Row]:
  if not args.devices:  # --devices '': the batch curve only
    return []
  results = []
  for n in common.int_list(args.devices):
    if n <= jax.device_count():
      results.append(measure_devices(energy, config, n, args.device_batch, args.steps, args.rounds))
    elif jax.default_backend() == "cpu":
      results.append(worker_result(n, args))
  kind = "virtual CPU devices" if jax.default_backend() == "cpu" else jax.devices()[0].device_kind
  return curve_rows(results, "devices", kind, "device(s)", "the same on 1 device", args)


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--batches", default="64,256,1024,4096,8192", help="batch curve, comma-separated")
  parser.add_argument("--devices", default="1,2,4,8", help="device curve, comma-separated, starting at 1 ('' for none)")
  parser.add_argument("--device-batch", type=int, default=512, help="rows of the device curve")
  parser.add_argument("--steps", type=int, default=1, help="search steps per timed call")
  parser.add_argument("--chunk", type=int, default=4096, help="rows per compiled program (ProbeConfig.chunk)")
  parser.add_argument("--layout", default="subpixel", help="generator decoder layout: subpixel or transpose")
  parser.add_argument(
    "--matmul-size", type=int, default=0, help="side of the square matrices of the peak (default: common.MatmulPeak's)"
  )
  parser.add_argument("--tolerance", type=float, default=1e-4, help="sharded vs one-device energies")
  parser.add_argument(
    "--processes", default="1,2,4", help="process curve, comma-separated, starting at 1 ('' for none)"
  )
  parser.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
  parser.add_argument("--process-worker", default="", help=argparse.SUPPRESS)  # processes,id,port
  common.add_common_args(parser, rounds=2)
  args = parser.parse_args()
  if args.quick:
    args.batches, args.devices, args.processes, args.device_batch, args.steps, args.rounds, args.matmul_size = (
      "8,32",
      "1,2",
      "1,2",
      8,
      1,
      1,
      512,
    )
  if args.process_worker:  # joins the run before JAX's backend starts
    processes, process_id, port = map(int, args.process_worker.split(","))
    if processes > 1:
      jax.distributed.initialize(f"127.0.0.1:{port}", processes, process_id, initialization_timeout=120)
    energy, config = setup(args.layout)
    r = measure_devices(energy, config, jax.device_count(), args.device_batch, args.steps, args.rounds)
    if jax.process_index() == 0:
      print(json.dumps(dict(r, processes=processes)))
    return

  energy, config = setup(args.layout)
  if args.worker:
    print(json.dumps(measure_devices(energy, config, args.worker, args.device_batch, args.steps, args.rounds)))
    return
  print(common.header())
  rows = batch_rows(energy, config, args)
  rows += device_rows(energy, config, args)
  rows += process_rows(args)
  common.finish(
    "scaling",
    "Latent search scaling (ratio: fraction of the matmul peak; speed-up over 1 device or 1 process)",
    rows,
    args,
  )


if __name__ == "__main__":
  main()
