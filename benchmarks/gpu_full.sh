#!/usr/bin/env bash
# Full-profile CamVid results on one GPU, installing nothing.
#
#   benchmarks/gpu_full.sh CAMVID_DIR OUT_DIR [seeds|levers|timing]
#
# seeds (default): the transfer U-Net and the mini U-Net, 3 seeds each, trained concurrently
#   on the one GPU with augmentation on the GPU (augment_on_device), then every best.pt scored
#   on the test split (plain, flip, multi-scale + flip; benchmarks/score_checkpoints.py).
# levers: one-seed variants of the transfer recipe (no random rescale; smp's default decoder;
#   a final fit on train+val; the EfficientNet-Lite1 and Lite2 encoders), scored the same way.
# timing: one run alone for 4 epochs, its epoch time against the training step alone
#   (benchmarks/train_throughput.py): is the input pipeline keeping up?
# Writes under OUT_DIR: runs/NAME/{best.pt,history.json,done.json,config.json}, logs/NAME.log,
# scores.json. Then, here: bring back the checkpoints and score them on the PNG test split
#   CAMVID_DIR=... python benchmarks/score_checkpoints.py OUT_DIR/runs/*/best.pt --out FILE
# and collect everything with benchmarks/full_profile_results.py.
# PROFILE=smoke DEVICE=cpu runs the same steps in minutes (a check without a GPU).
set -euo pipefail
CAMVID_DIR=$(cd "$1" && pwd); OUT=$(mkdir -p "$2" && cd "$2" && pwd); MODE=${3:-seeds}
PROFILE=${PROFILE:-full}
DEVICE=${DEVICE:-cuda}
# A guard, not a budget: on one H100 the seeds wave took about 400 s (docs/results.md#full-length-on-a-gpu-the-full-profile).
WAVE_SECONDS=${WAVE_SECONDS:-540}
PYTHON=${PYTHON:-python3}
cd "$(dirname "$0")/.."
export CAMVID_DIR PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT/runs" "$OUT/logs"
echo "== $(date -u +%FT%TZ) $MODE: $($PYTHON -c 'import torch; print(torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")'), $(nproc) cores"

train() {  # NAME MODEL [--set FIELD=VALUE ...]
  local name=$1 model=$2; shift 2
  # 2 threads each: the runs share the machine's cores and the GPU.
  OMP_NUM_THREADS=2 timeout "$WAVE_SECONDS" $PYTHON -m helpers.train --profile "$PROFILE" \
    --model "$model" --device "$DEVICE" --out "$OUT/runs/$name" \
    --set track_test_each_epoch=0 --set num_workers=0 "$@" >"$OUT/logs/$name.log" 2>&1 \
    || echo "!! $name ended with status $? (see logs/$name.log)"
}

started=$(date +%s)
case "$MODE" in
  seeds)
    for seed in 42 7 1; do
      train "unet-effnet-lite0-seed$seed" unet-effnet-lite0 --set seed=$seed &
      train "mini-unet-seed$seed" mini-unet --set seed=$seed &
    done ;;
  levers)
    train unet-effnet-lite0-no-rescale unet-effnet-lite0 --set seed=42 --set scale_limit=0 &
    train unet-effnet-lite0-smp-decoder unet-effnet-lite0 --set seed=42 --decoder-channels 256,128,64,32,16 &
    train unet-effnet-lite0-trainval unet-effnet-lite0 --set seed=42 --set fit_on=train+val &
    train unet-effnet-lite1-seed42 unet-effnet-lite1 --set seed=42 &
    train unet-effnet-lite2-seed42 unet-effnet-lite2 --set seed=42 & ;;
  timing)
    OMP_NUM_THREADS=4 $PYTHON -m helpers.train --profile "$PROFILE" --model unet-effnet-lite0 \
      --device "$DEVICE" --out "$OUT/solo" --epochs 4 --set track_test_each_epoch=0 \
      --set num_workers=0 >"$OUT/logs/solo.log" 2>&1
    $PYTHON - "$OUT/solo/history.json" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))[1:]  # the first epoch also decodes the data and warms up
print("alone: seconds per epoch", [round(r["seconds"], 2) for r in rows],
      "of which training", [round(r["train_seconds"], 2) for r in rows])
PY
    $PYTHON benchmarks/train_throughput.py --device "$DEVICE" --profile "$PROFILE" --batches 20
    exit 0 ;;
  *) echo "unknown mode $MODE: seeds, levers or timing" >&2; exit 2 ;;
esac
wait
echo "== training: $(( $(date +%s) - started )) s"
for log in "$OUT"/logs/*.log; do
  echo "-- $(basename "$log" .log): $(grep -E '^epoch [0-9]+/[0-9]+:' "$log" | tail -1)"
done
$PYTHON benchmarks/score_checkpoints.py "$OUT"/runs/*/best.pt --out "$OUT/scores.json" --device "$DEVICE"
echo "== done in $(( $(date +%s) - started )) s"
