#!/usr/bin/env bash
# Issue 27's accelerator check, one prepared run for a lent GPU (about 5-7 minutes on one H100/H200):
# 1. the 4096-state x 200-step Pong search (`jaxprobe probe`, T+-, the shipped agent and generator)
#    with matrix products and convolutions in fp32 ('highest'), TF32 and bf16 (JAX's
#    JAX_DEFAULT_MATMUL_PRECISION: the operands rounded, the sums in fp32), search and compilation
#    timed apart by `probe` itself; the bf16 and TF32 energies checked against fp32's;
# 2. the same search against eager PyTorch on the same GPU (benchmarks/latent_search.py, 20 steps per
#    timed call: the per-step ratio);
# 3. generator training steps per second at batch 64 and 256 against eager PyTorch
#    (benchmarks/generator_step.py).
# Results land in $OUT: search_precision.json, log.txt and results.csv (the benchmark rows).
#
#   OUT=/tmp/out bash benchmarks/gpu_issue27.sh                                         # on the device
#   NUM=16 STEPS=2 SEARCH_BATCH=16 GEN_BATCHES=4 ROUNDS=1 OUT=/tmp/out bash benchmarks/gpu_issue27.sh   # smoke run
set -euo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PY:-python3}
NUM=${NUM:-4096}
STEPS=${STEPS:-200}
SEARCH_BATCH=${SEARCH_BATCH:-4096}
GEN_BATCHES=${GEN_BATCHES:-64,256}
ROUNDS=${ROUNDS:-3}
WORK=${WORK:-/tmp/gpu_issue27}
mkdir -p "$OUT" "$WORK"
exec > >(tee -a "$OUT/log.txt") 2>&1
$PY -c "import jax; print('devices:', jax.devices(), 'jax', jax.__version__)"
for precision in highest tensorfloat32 bfloat16; do
  rm -rf "$WORK/probe_$precision"
  JAX_DEFAULT_MATMUL_PRECISION=$precision $PY -m jaxprobe.cli probe --agent jaxprobe/assets/agents/pong \
    --generator jaxprobe/assets/generators/pong --target T+- --num "$NUM" --steps "$STEPS" --quiet \
    --out "$WORK/probe_$precision"
done
WORK="$WORK" OUT="$OUT" $PY - <<'PY'
import json, os
from pathlib import Path
import numpy as np
work, out = Path(os.environ["WORK"]), Path(os.environ["OUT"])
runs = {p: json.loads((work / f"probe_{p}" / "latent_Tplusminus" / "run.json").read_text()) for p in ("highest", "tensorfloat32", "bfloat16")}
fp32 = np.asarray(runs["highest"]["energy_end"])
result = {}
for p, r in runs.items():
  e = np.asarray(r["energy_end"])
  result[p] = dict(search_s=r["seconds"], compile_s=r["compile_s"], median_energy=float(np.median(e)),
                   median_relative_difference_to_fp32=float(np.median(np.abs(e - fp32) / np.maximum(np.abs(fp32), 1e-6))))
  print(p, json.dumps(result[p]))
(out / "search_precision.json").write_text(json.dumps(result, indent=1))
PY
$PY benchmarks/latent_search.py --batches "$SEARCH_BATCH" --steps 20 --rounds "$ROUNDS" --layouts transpose --csv "$OUT/results.csv"
$PY benchmarks/generator_step.py --batches "$GEN_BATCHES" --rounds "$ROUNDS" --layouts transpose --csv "$OUT/results.csv"
