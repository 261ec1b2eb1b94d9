#!/usr/bin/env bash
# Leave-one-out training of the real-chest recipes, every fold and recipe at once on one GPU (how
# the shipped models were trained; docs/shipped_models.json records the run). From the bundle root,
# with data/real64 prepared (scripts/prepare_data.py ... --size 64; the five shared real CTs):
#
#   bash scripts/train_real_folds.sh runs/folds 420
#
# writes runs/folds/<recipe>_<case>/ (log, TensorBoard events, full checkpoints) for each recipe
# below and each held-out real case. Each run gets TIME_BUDGET seconds of training
# (--time_budget_s: the epochs that fit, with the learning-rate drop moved to the same fraction).
# Environment: PYTHON (python), N_PHANTOMS (256), REAL_REPEATS (16), WORKERS (phantom workers, 8),
# CASES, RECIPES (empty: prepare the data only), INIT (for the stage-3 recipes: a folder of each fold's stage-2 weights,
# dv_<case>.pt).
set -euo pipefail

OUT=${1:-runs/folds}
TIME_BUDGET=${2:-420}
PY=${PYTHON:-python}
N_PHANTOMS=${N_PHANTOMS:-256}
WORKERS=${WORKERS:-8}
CASES=${CASES:-"normal001 P002 cap002 Lung_Dx-A0001 Lung_Dx-A0002"}
RECIPES=${RECIPES-"dv125 dv250 sv250"}  # RECIPES="" prepares the data only
REAL_REPEATS=${REAL_REPEATS:-16}
PHANTOMS=data/phantoms64_n${N_PHANTOMS}

# the recipes (RECIPE CASE): configs/train.yaml + configs/train_real.yaml + these overrides
recipe_args() {
    case $1 in
        dv125) echo "--views 2 --width 0.125 --init_ckpt models/phantom_cnn.pt --init_strict false" ;;
        dv250) echo "--views 2 --width 0.25 --init_ckpt \$None" ;;
        sv250) echo "--views 1 --width 0.25 --init_ckpt \$None" ;;
        # the geometry-aware lift (issue 23), from scratch: the phantom-only model lifts by repetition
        dv125bp) echo "--views 2 --width 0.125 --lift backproject --init_ckpt \$None" ;;
        sv250bp) echo "--views 1 --width 0.25 --lift backproject --init_ckpt \$None" ;;
        # stage 3: dv125 after its stage 2, with the bone terms (losses.bone_terms) at weight N
        dv125bone*) echo "--views 2 --width 0.125 --init_ckpt ${INIT:?INIT: the stage-2 weights folder}/dv_$2.pt --init_strict true --bone_weight ${1#dv125bone}" ;;
        *) echo "unknown recipe $1" >&2; exit 2 ;;
    esac
}

# realistic phantoms (seeds 2000 + i; the first 32 are data/phantoms64 of the CPU recipe)
[ -f "$PHANTOMS/datalist.json" ] || $PY scripts/make_phantoms.py --out "$PHANTOMS" --n "$N_PHANTOMS" --size 64 --seed 2000 --workers "$WORKERS" --progress False
for case in $CASES; do
    # the other real CTs, each listed REAL_REPEATS times per epoch
    $PY scripts/make_training_set.py --out "data/real64_${case}_n${N_PHANTOMS}/datalist.json" --real data/real64/datalist.json \
        --phantoms "$PHANTOMS/datalist.json" --holdout "[$case]" --real_repeats "$REAL_REPEATS"
done

mkdir -p "$OUT"
pids=()
for recipe in $RECIPES; do
    for case in $CASES; do
        run="$OUT/${recipe}_${case}"
        mkdir -p "$run"
        # shellcheck disable=SC2046
        OMP_NUM_THREADS=1 timeout $((TIME_BUDGET + 150)) $PY -m monai.bundle run training \
            --config_file "['configs/train.yaml','configs/train_real.yaml']" \
            --dataset_dir "data/real64_${case}_n${N_PHANTOMS}" --output_dir "$run" \
            --max_epochs 300 --lr_milestone 240 --time_budget_s "$TIME_BUDGET" \
            $(recipe_args "$recipe" "$case") > "$run/log" 2>&1 &
        pids+=($!)
    done
done
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=$((failed + 1)); done
echo "train_real_folds: $(( ${#pids[@]} - failed )) of ${#pids[@]} runs finished in $OUT"
exit $(( failed > 0 ))
