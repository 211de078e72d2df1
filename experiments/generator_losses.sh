#!/usr/bin/env bash
# Issue 23's loss experiment on a lent accelerator: the Pong generator trained several ways at one budget
# (by default ablation full or vae, object_share 0 or 0.5; RUNS="ablation share [FIELD=VALUE ...];..."
# for others), each measured by `jaxprobe fidelity` (objects drawn, greedy-action agreement) on 1,000
# held-out states. Datasets travel packed (experiments/device_data.py).
# Results land in $OUT: results.json (fidelity, steps, wall time, last curve row per run), one
# reconstructions PNG per run, log.txt.
#
# AGENT, TRAIN and HELDOUT (packed datasets in carry/) pick the game: Pong's PPO agent by default,
# e.g. AGENT=jaxprobe/assets/agents/seaquest-dqn TRAIN=seaquest-dqn10k HELDOUT=seaquest-dqn_heldout.
#
#   STEPS=6000 OUT=/tmp/out bash experiments/generator_losses.sh        # on the device
#   STEPS=4 EXTRA="latent_dim=8 widths=[4,8,8,8]" OUT=/tmp/out bash experiments/generator_losses.sh   # smoke run
set -euo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PY:-python3}
STEPS=${STEPS:-6000}
EXTRA=${EXTRA:-}
AGENT=${AGENT:-jaxprobe/assets/agents/pong}
TRAIN=${TRAIN:-pong10k}
HELDOUT=${HELDOUT:-pong_heldout_ram}
CONFIG=${CONFIG:-configs/generator_gpu.yaml}
WORK=${WORK:-/tmp/gl_work}
mkdir -p "$OUT" "$WORK"
exec > >(tee -a "$OUT/log.txt") 2>&1
$PY -c "import jax; print('devices:', jax.devices(), 'jax', jax.__version__)"
for d in "$TRAIN" "$HELDOUT"; do
  [ -d "$WORK/$d" ] || $PY experiments/device_data.py unpack "carry/$d" "$WORK/$d" --agent "$AGENT"
done
RUNS=${RUNS:-"full 0.0;vae 0.0;full 0.5;vae 0.5"}
IFS=';' read -ra RUN_LIST <<< "$RUNS"
for run in "${RUN_LIST[@]}"; do
  set -- $run
  name="$1_obj${2/./}$(printf '_%s' "${@:3}" | tr -c 'A-Za-z0-9_\n' '_')"
  name=${name%_}
  start=$(date +%s)
  $PY -m jaxprobe.cli train-generator --config "$CONFIG" --dataset "$WORK/$TRAIN" --agent "$AGENT" \
    --out "$WORK/$name" ablation=$1 object_share=$2 total_steps=$STEPS checkpoint_every=$STEPS log_every=500 \
    image_every=$STEPS "${@:3}" $EXTRA --quiet
  end=$(date +%s)
  $PY -m jaxprobe.cli fidelity --agent "$AGENT" --generator "$WORK/$name/generator" --dataset "$WORK/$HELDOUT" \
    --json "$WORK/$name/fidelity.json"
  cp "$WORK/$name/reconstructions.png" "$OUT/rec_$name.png"
  $PY - "$WORK/$name" "$name" $((end - start)) "$OUT/results.json" <<'PYEOF'
import csv, json, sys
from pathlib import Path
run, name, wall, results = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
all_runs = json.loads(results.read_text()) if results.exists() else {}
rows = list(csv.DictReader(open(run / "curve.csv"))) if (run / "curve.csv").exists() else []
all_runs[name] = dict(fidelity=json.loads((run / "fidelity.json").read_text()), train_wall_s=wall,
                      config=(run / "config.yaml").read_text(), last_curve_row=rows[-1] if rows else None)
results.write_text(json.dumps(all_runs, indent=1))
PYEOF
  echo "== $name done: train ${wall:-$((end - start))} s"
done
