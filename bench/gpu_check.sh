#!/usr/bin/env bash
# The GPU side by side of issue #35, in two prepared calls of the device tool (MNIST, the wheels and
# the project fit in the first; the CIFAR zip needs a call of its own on the still-warm machine):
#
#   here, once:  ../shared/tools/gpu-wheels.sh .whl && .venv/bin/pip download -q --no-deps -d .whl airbench==0.1.8
#                mkdir -p .gpudata && cp -r ../shared/datasets/mnist .gpudata/
#                mkdir -p .gpudata-cifar && cp ../shared/datasets/cifar10-jpeg.zip .gpudata-cifar/
#                printf '/.gpudata/\n/.gpudata-cifar/\n' >> .git/info/exclude   (.whl is in .gitignore)
#   call 1 (device run, carry [".whl", ".gpudata"]):       bash bench/gpu_check.sh mnist
#   call 2 (carry [".gpudata-cifar"], same warm machine):  bash bench/gpu_check.sh cifar
#
# Each call leaves gpu-<stage>.md (the table), gpu-<stage>.json and tests.txt under $OUT. The first
# call installs trainlab's missing dependencies from the carried wheels into /tmp/site (still there
# for the second). GPU_CHECK_DRY=1 runs every step tiny on the CPU here, to check the script itself.
set -uo pipefail
cd "$(dirname "$0")/.."
export OUT="${OUT:-$PWD/gpu-check-out}" PYTHONUNBUFFERED=1
mkdir -p "$OUT"
stage="${1:-mnist}"
if [ -z "${GPU_CHECK_DRY:-}" ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee "$OUT/gpu.txt"
  if [ ! -d /tmp/site ] && [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl 2>&1 | tail -3
  fi
  export PYTHONPATH="/tmp/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
  if [ "$stage" = cifar ]; then
    mkdir -p .gpudata && cp -n .gpudata-cifar/cifar10-jpeg.zip .gpudata/ 2>/dev/null || true
    ln -sf "$PWD/.gpudata-cifar/cifar10-jpeg.zip" /tmp/cifar10-jpeg.zip
    export TRAINLAB_DATA="${TRAINLAB_DATA:-$PWD/.gpudata-cifar}"
    cp -rn /tmp/gpudata-mnist/mnist .gpudata-cifar/ 2>/dev/null || true
  else
    export TRAINLAB_DATA="${TRAINLAB_DATA:-$PWD/.gpudata}"
    mkdir -p /tmp/gpudata-mnist && cp -rn .gpudata/mnist /tmp/gpudata-mnist/ 2>/dev/null || true
  fi
  python3 -c "import torch, sys; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'devices', torch.cuda.device_count()); sys.exit(0 if torch.cuda.is_available() else 3)" \
    | tee -a "$OUT/gpu.txt" || { echo "no CUDA device visible" | tee -a "$OUT/gpu.txt"; exit 3; }
  exec python3 bench/gpu_check.py "$stage"
fi
exec "${PYTHON:-python3}" bench/gpu_check.py "$stage"
