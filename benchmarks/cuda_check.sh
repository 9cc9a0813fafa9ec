#!/usr/bin/env bash
# The CUDA path, checked on a GPU machine in one go (CI has no GPU; every other check runs on CPU):
#   tests  the device-parametrised unit tests (registration, hint loss, RRL net), their cuda cases only
#   stock  what a GPU user types: `nnunetv2-oneshot plan` (stock planner, nnUNetPlans), nnUNetv2_train,
#          nnUNetv2_predict and `nnunetv2-oneshot propagate` with their default device (cuda), tiny budget
#   cost   seconds per iteration and peak GPU memory of each trainer at nnUNetPlans (benchmarks/train_cost.py)
#   bench  `nnunetv2-oneshot benchmark -device cuda` at a tiny budget (its own CPU plan)
#   rrl    RRLMedSAMTrainer (needs the [sam] extra): tiny training + prediction, and its cost
# Needs this package installed (with nnU-Net) in the python on PATH; from the repository root (the tests).
# Writes a log and JSON into OUT. About 12 minutes on one H100 with 16 cores (each step: benchmarks/README.md).
#   bash benchmarks/cuda_check.sh OUT [RAW_FOLDER_OF_Dataset990]      (STEPS="tests stock" to choose)
set -uo pipefail
OUT=$(realpath -m "${1:?usage: cuda_check.sh OUT [RAW_Dataset990_folder]}"); RAW_IN=${2:-}
STEPS=${STEPS:-"tests stock cost bench rrl"}
W=${CUDA_CHECK_WORK:-/tmp/oneshot_cuda_check}
mkdir -p "$OUT" "$W"
export nnUNet_raw=$W/raw nnUNet_preprocessed=$W/pre nnUNet_results=$W/res PYTHONUNBUFFERED=1
export nnUNet_def_n_proc=${nnUNet_def_n_proc:-8} nnUNet_n_proc_DA=${nnUNet_n_proc_DA:-8}
LOG=$OUT/cuda_check.log
D=Dataset990_OneShotBrain
TR=OneShotDistillTrainer_tiny
failed=()

# run NAME LIMIT_S CMD...: output into the log; one summary line (and the tail on failure) on the terminal
run() {
    local name=$1 limit=$2 t=$SECONDS rc; shift 2
    echo "=== $name: $*" >> "$LOG"
    timeout "$limit" "$@" >> "$LOG" 2>&1; rc=$?
    printf '%-28s rc %-3s %4s s\n' "$name" "$rc" "$((SECONDS - t))"
    if [ "$rc" != 0 ]; then failed+=("$name"); tail -n 15 "$LOG" | sed 's/^/    | /'; fi
    return "$rc"
}
want() { [[ " $STEPS " == *" $1 "* ]]; }

echo "cuda_check $(date -u +%FT%TZ), steps: $STEPS" | tee "$LOG"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$LOG"
run doctor 60 nnunetv2-oneshot doctor

if want tests; then
    run unit_tests_cuda 240 python -m pytest -q -p no:cacheprovider -k cuda \
        tests/test_registration.py tests/test_distillation.py tests/test_rrl.py
fi

if [ ! -d "$nnUNet_raw/$D" ]; then
    mkdir -p "$nnUNet_raw"
    if [ -n "$RAW_IN" ]; then cp -r "$RAW_IN" "$nnUNet_raw/$D"; else run make_dataset 120 nnunetv2-oneshot make-dataset brain; fi
fi

if want stock; then
    run plan_stock 300 nnunetv2-oneshot plan 990 -np "$nnUNet_def_n_proc" &&
    run train_tiny_default_device 300 nnUNetv2_train 990 3d_fullres all -tr $TR &&
    run checkpoint_final_written 5 test -f "$nnUNet_results/$D/${TR}__nnUNetPlans__3d_fullres/fold_all/checkpoint_final.pth" &&
    run predict_default_device 300 nnUNetv2_predict -i "$nnUNet_raw/$D/imagesTs" -o "$W/pred" -d 990 \
        -c 3d_fullres -f all -tr $TR -npp 2 -nps 2 &&
    run propagate_default_device 300 nnunetv2-oneshot propagate -i "$nnUNet_raw/$D/imagesTs" -o "$W/prop" \
        -d 990 -f all -tr $TR
    cat > "$W/dice.py" <<'EOF'  # a file, not stdin: nnU-Net's evaluation re-imports __main__ in a spawn pool
import glob, json, os, sys
from nnunetv2_oneshot.evaluation import dice_per_label
if __name__ == "__main__":
    w, raw = sys.argv[1:]
    with open(os.path.join(raw, "dataset.json")) as f:
        ds = json.load(f)
    for name in ("pred", "prop"):
        n = len(glob.glob(os.path.join(w, name, "*" + ds["file_ending"])))
        dice = dice_per_label(os.path.join(w, name), os.path.join(raw, "labelsTs"), ds)["mean"] if n else float("nan")
        print(f"{name}: {n} cases, mean Dice {dice:.3f} (tiny budget: a pipeline check, not a result)")
EOF
    python "$W/dice.py" "$W" "$nnUNet_raw/$D" 2>&1 | tee -a "$LOG"
fi

if want cost; then
    run cost_nnUNetPlans 420 python benchmarks/train_cost.py 990 -p nnUNetPlans --iters 20 --warmup 5 \
        --device cuda --json "$OUT/cost_cuda.json" -tr nnUNetTrainer OneShotRegAugTrainer OneShotDistillTrainer &&
    tail -n 5 "$LOG"
fi

if want bench; then
    nnUNet_compile=f run benchmark_cuda 420 nnunetv2-oneshot benchmark 990 -o "$W/bench" --seeds 0 --epochs 2 --iterations 5 \
        --registration-iterations 10 -device cuda --no-cost \
        --methods OneShotDistillTrainer atlas_propagation &&
    cp "$W/bench/$D.md" "$OUT/benchmark_cuda_tiny.md"
fi

if want rrl; then
    run train_rrl_tiny_default_device 300 nnUNetv2_train 990 3d_fullres all -tr RRLMedSAMTrainer_tiny &&
    run predict_rrl_default_device 300 nnUNetv2_predict -i "$nnUNet_raw/$D/imagesTs" -o "$W/pred_rrl" -d 990 \
        -c 3d_fullres -f all -tr RRLMedSAMTrainer_tiny -npp 2 -nps 2
    run cost_rrl_nnUNetPlans 300 python benchmarks/train_cost.py 990 -p nnUNetPlans --iters 20 --warmup 5 \
        --device cuda --json "$OUT/cost_cuda_rrl.json" -tr nnUNetTrainer RRLMedSAMTrainer &&
    tail -n 4 "$LOG"
fi

echo "failed: ${failed[*]:-none}" | tee -a "$LOG"
[ ${#failed[@]} = 0 ]
