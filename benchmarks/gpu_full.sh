#!/usr/bin/env bash
# Full-profile CamVid results on one GPU in under 10 minutes, installing nothing.
#
#   benchmarks/gpu_full.sh CAMVID_DIR OUT_DIR
#
# Trains, concurrently on the one GPU: the transfer U-Net (3 seeds), the mini U-Net (3 seeds),
# and two one-seed levers of the transfer recipe (no random rescale; a final fit on train+val).
# Augmentation runs on the GPU (augment_on_device). Then scores every best.pt on the test split
# (plain, flip, multi-scale + flip; benchmarks/score_checkpoints.py), and times a solo epoch
# against the training step alone (benchmarks/train_throughput.py). Writes under OUT_DIR:
# runs/NAME/{best.pt,history.json,done.json}, logs/NAME.log, scores.json, throughput.log.
# Brought-back checkpoints are scored on the PNG test split with
#   CAMVID_DIR=... python benchmarks/score_checkpoints.py OUT_DIR/runs/*/best.pt --out FILE
# PROFILE=smoke runs the same steps in seconds (for a check on the CPU).
set -euo pipefail
CAMVID_DIR=$(cd "$1" && pwd); OUT=$(mkdir -p "$2" && cd "$2" && pwd)
export CAMVID_DIR PYTHONUNBUFFERED=1
PROFILE=${PROFILE:-full}
DEVICE=${DEVICE:-cuda}
WAVE_SECONDS=${WAVE_SECONDS:-450}
PYTHON=${PYTHON:-python3}
cd "$(dirname "$0")/.."
mkdir -p "$OUT/runs" "$OUT/logs"
echo "== $(date -u +%FT%TZ) $($PYTHON -c 'import torch; print(torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")') cores=$(nproc)"

train() {  # NAME MODEL [--set FIELD=VALUE ...]
  local name=$1 model=$2; shift 2
  # 2 threads each: the runs share the machine's cores and the GPU.
  OMP_NUM_THREADS=2 timeout "$WAVE_SECONDS" $PYTHON -m helpers.train --profile "$PROFILE" \
    --model "$model" --device "$DEVICE" --out "$OUT/runs/$name" \
    --set track_test_each_epoch=0 --set num_workers=0 "$@" >"$OUT/logs/$name.log" 2>&1 \
    || echo "!! $name ended with status $? (see logs/$name.log)"
}

started=$(date +%s)
for seed in 42 7 1; do
  train "unet-effnet-lite0-seed$seed" unet-effnet-lite0 --set seed=$seed &
  train "mini-unet-seed$seed" mini-unet --set seed=$seed &
done
train unet-effnet-lite0-no-rescale unet-effnet-lite0 --set seed=42 --set scale_limit=0 &
train unet-effnet-lite0-trainval unet-effnet-lite0 --set seed=42 --set fit_on=train+val &
wait
echo "== training wave: $(( $(date +%s) - started )) s"
for log in "$OUT"/logs/*.log; do echo "-- $(basename "$log")"; grep -E "^epoch|early stop|best epoch|Error|error" "$log" | tail -3; done

$PYTHON benchmarks/score_checkpoints.py "$OUT"/runs/*/best.pt --out "$OUT/scores.json" --device "$DEVICE" || true

# Input pipeline check: one run alone, its epoch time against the step time alone.
OMP_NUM_THREADS=4 $PYTHON -m helpers.train --profile "$PROFILE" --model unet-effnet-lite0 \
  --device "$DEVICE" --out "$OUT/solo" --epochs 4 --set track_test_each_epoch=0 --set num_workers=0 \
  >"$OUT/logs/solo.log" 2>&1 || echo "!! solo run failed"
$PYTHON - "$OUT/solo/history.json" <<'PY' || true
import json, sys
rows = json.load(open(sys.argv[1]))
print("solo epochs (s):", [round(r["seconds"], 2) for r in rows],
      "| train part (s):", [round(r.get("train_seconds", float("nan")), 2) for r in rows])
PY
$PYTHON benchmarks/train_throughput.py --device "$DEVICE" --profile "$PROFILE" --batches 20 \
  >"$OUT/throughput.log" 2>&1 || true
tail -12 "$OUT/throughput.log"
echo "== done in $(( $(date +%s) - started )) s"
