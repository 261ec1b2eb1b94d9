#!/usr/bin/env bash
# The comparison of configs/compare.yaml on a lent GPU, every row at once, in about ten minutes
# of an H200: all recipes and the paper's two Table 4 ablations on all five leave-one-out folds at
# 64^3 (256 phantoms, each real training CT 16 times per epoch, as the shipped recipe; 30 runs),
# and the double-view recipes (repeat and backproject lift) at 128^3 (10 runs), side by side on
# the one GPU, each run with the same time budget.
#
# Two steps. Here, on the CPU machine with the project's venv (the GPU image has PyTorch but not
# MONAI, Ignite, nibabel or fire, and reaches no registry):
#   bash scripts/compare_gpu.sh pack          # -> gpu_carry/: those wheels + the prepared real CTs
# There, through the device tool (kind nvidia-h200 for the memory of 30 runs at once), from the
# repository root with carry ["gpu_carry"] and timeout_s 600:
#   bash scripts/compare_gpu.sh run           # results in $OUT (table64.md, results64.json, ...)
# Environment: BUDGET (training seconds per run, 270), N_PHANTOMS (256), WORKERS (12), DEVICE (cuda).
set -euo pipefail
cd "$(dirname "$0")/.."
STEP=${1:?usage: compare_gpu.sh pack|run}
CARRY=gpu_carry
BUDGET=${BUDGET:-270}
N_PHANTOMS=${N_PHANTOMS:-256}
WORKERS=${WORKERS:-12}

if [ "$STEP" = pack ]; then
    PY=${PYTHON:-.venv/bin/python}
    rm -rf "$CARRY" && mkdir -p "$CARRY/wheels"
    "$PY" -m pip download --quiet --no-deps -d "$CARRY/wheels" \
        monai==1.6.1 pytorch-ignite==0.5.5 nibabel==5.4.2 fire==0.7.1 termcolor
    for size in 64 128; do
        "$PY" scripts/prepare_data.py --src ../shared/data/chest-ct-dicom --out "$CARRY/real$size" --size "$size" \
            --workers 2 --progress False
    done
    du -sh "$CARRY"
    exit 0
fi
[ "$STEP" = run ] || { echo "unknown step $STEP (pack or run)" >&2; exit 2; }
: "${OUT:?OUT: the output folder of the device tool}"
PY=${PYTHON:-python3}
"$PY" -m pip install --quiet --no-deps --no-index "$CARRY"/wheels/*.whl
export PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,memory.total --format=csv > "$OUT/gpu.txt"
start=$(date +%s)
"$PY" scripts/make_phantoms.py --out data/phantoms64_n$N_PHANTOMS --n "$N_PHANTOMS" --size 64 --seed 2000 \
    --workers "$WORKERS" --progress False > "$OUT/data.log" 2>&1
"$PY" scripts/make_phantoms.py --out data/phantoms128_n64 --n 64 --size 128 --seed 2000 \
    --workers "$WORKERS" --progress False >> "$OUT/data.log" 2>&1
echo "data: $(( $(date +%s) - start )) s" >> "$OUT/data.log"
GPU_ARGS="{init_ckpt: null, max_epochs: 300, lr_milestone: 240, device: ${DEVICE:-cuda}, num_workers: 0}"
# the four rows of configs/compare.yaml plus the paper's Table 4 ablations (conv lift, one branch)
RECIPES64="{dv_repeat: {views: 2, width: 0.125, lift: repeat}, dv_backproject: {views: 2, width: 0.125, lift: backproject},
 sv_repeat: {views: 1, width: 0.25, lift: repeat}, sv_backproject: {views: 1, width: 0.25, lift: backproject},
 dv_conv_lift: {views: 2, width: 0.125, lift: conv}, dv_single_branch: {views: 2, width: 0.125, dual_branch: false}}"
"$PY" scripts/compare_recipes.py --spec configs/compare.yaml --out runs/gpu64 --real "$CARRY/real64/datalist.json" \
    --recipes "$RECIPES64" \
    --phantoms "data/phantoms64_n$N_PHANTOMS/datalist.json" --folds "[normal001,P002,cap002,Lung_Dx-A0001,Lung_Dx-A0002]" \
    --budget_s "$BUDGET" --parallel 30 --threads 1 --real_repeats 16 --train_args "$GPU_ARGS" > runs/gpu64.log 2>&1 &
p64=$!
"$PY" scripts/compare_recipes.py --spec configs/compare.yaml --out runs/gpu128 --real "$CARRY/real128/datalist.json" \
    --phantoms data/phantoms128_n64/datalist.json --folds "[normal001,P002,cap002,Lung_Dx-A0001,Lung_Dx-A0002]" \
    --recipes "{dv_repeat: {views: 2, width: 0.125, lift: repeat, batch_size: 2}, dv_backproject: {views: 2, width: 0.125, lift: backproject, batch_size: 2}}" \
    --size 128 --budget_s "$BUDGET" --parallel 10 --threads 1 --real_repeats 8 --train_args "$GPU_ARGS" \
    > runs/gpu128.log 2>&1 &
p128=$!
status=0
wait $p64 || status=1
wait $p128 || status=1
for size in 64 128; do
    cp "runs/gpu$size/table.md" "$OUT/table$size.md" 2>/dev/null || true
    cp "runs/gpu$size/results.json" "$OUT/results$size.json" 2>/dev/null || true
    tail -c 20000 "runs/gpu$size.log" > "$OUT/log$size.txt"
done
echo "compare_gpu: $(( $(date +%s) - start )) s in all, exit $status"
exit $status
