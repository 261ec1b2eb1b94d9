#!/usr/bin/env bash
# The GPU figures of docs/README.md "Performance (networks)" on a lent GPU, in one call of a few
# minutes: the reference rates (fp32 / TF32 and bfloat16 matmul and 3D convolutions), DuoLift and
# the X2CT-style baseline inference at 64^3 and 128^3 (fp32 and bfloat16 autocast, with the PSNR
# between the two), and one training step at 64^3 and 128^3 (paper widths and width 1/8, fp32 and
# AMP bfloat16): seconds, samples per second, GPU memory.
#
# The GPU image has PyTorch but not MONAI, Ignite, nibabel or fire: first, here on the CPU
# machine, `bash scripts/compare_gpu.sh pack` (-> gpu_carry/ with those wheels). Then through the
# device tool, from the repository root with carry ["gpu_carry"] and timeout_s 600:
#   bash scripts/benchmark_gpu.sh        # -> $OUT/benchmark_gpu.json, $OUT/gpu.txt, $OUT/benchmark_gpu.log
set -euo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?OUT: the output folder of the device tool}"
PY=${PYTHON:-python3}
"$PY" -m pip install --quiet --no-deps --no-index gpu_carry/wheels/*.whl
export PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt"
timeout "${LIMIT_S:-540}" "$PY" scripts/benchmark.py --sections generator,training --device cuda \
    --out "$OUT/benchmark_gpu.json" > "$OUT/benchmark_gpu.log" 2>&1
tail -n 5 "$OUT/benchmark_gpu.log"
