#!/usr/bin/env bash
# The GPU path in one prepared run (about 8 minutes on one H200), for the `device` tool of this
# workplace or any CUDA machine:
#
#   mkdir -p .gpudata && cp -r ../shared/datasets/mnist ../shared/datasets/cifar10-jpeg.zip .gpudata/
#   echo /.gpudata/ >> .git/info/exclude          # carried, never committed
#   (device) run: bash bench/gpu_check.sh          carry: [".gpudata"]
#
# It installs the project (torch from the machine when it has a CUDA build, else the pinned wheel),
# runs the CUDA-marked tests (tests/test_cuda.py), then trains mnist-fast, mnist-tfjs-cnn and
# cifar10-fast on --device cuda and prints accuracy and time. Everything lands under $OUT (or
# ./gpu-check-out). Exits non-zero when no CUDA device is visible.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu-check-out}"
mkdir -p "$OUT"
DATA="${TRAINLAB_DATA:-$PWD/.gpudata}"
export TRAINLAB_DATA="$DATA" TRAINLAB_RUNS="$OUT/runs" PYTHONUNBUFFERED=1
log() { echo "== $*" | tee -a "$OUT/summary.txt"; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee "$OUT/gpu.txt"
PY=python3
if ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  $PY -m pip install -q "torch>=2.4,<3" 2>&1 | tail -2
fi
$PY -m pip install -q -e '.[test]' 2>&1 | tail -2
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'devices', torch.cuda.device_count())" \
  | tee -a "$OUT/summary.txt"
$PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || { log "no CUDA device visible"; exit 3; }

log "CUDA tests"
timeout 240 $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$OUT/tests.txt" | tail -15

for recipe in mnist-fast mnist-tfjs-cnn cifar10-fast; do
  sets=()
  [[ $recipe == cifar10* ]] && sets=(--set "data.source=$DATA/cifar10-jpeg.zip")
  log "train $recipe --device cuda"
  timeout 200 trainlab train "$recipe" --device cuda --quiet --json "${sets[@]}" > "$OUT/$recipe.json" 2> "$OUT/$recipe.err"
  $PY - "$OUT/$recipe.json" <<'PYEOF' | tee -a "$OUT/summary.txt"
import json, sys
try:
    r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
    print(f"{r['recipe']}: test_acc {r['test_acc']:.4f}, train {r['train_seconds']:.1f} s, total {r['total_seconds']:.1f} s, "
          f"{r['epochs']} epochs")
except Exception as exc:
    print(f"{sys.argv[1]}: no result ({exc})")
PYEOF
done
log "done"
