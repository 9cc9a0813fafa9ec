#!/usr/bin/env bash
# The benchmark on one GPU with every trained row at once: one `nnunetv2-oneshot benchmark` per method
# group, each running its seeds side by side (--jobs), all on the same GPU. Data loading and augmentation
# (on the CPU) bound the speed of these small networks, so the rows share the cores; the upper bound runs
# niced so that the rows that make the comparison finish first when the cores are short.
#   bash benchmarks/gpu_benchmark.sh start B           launch in B (detached: it outlives this shell)
#   bash benchmarks/gpu_benchmark.sh wait B OUT SECS   wait up to SECS, then report what has finished and
#                                                      pack config, score records, logs and report into OUT
#   bash benchmarks/gpu_benchmark.sh stop B            stop the runs (before a last `wait B OUT 0` when the
#                                                      lease is about to end: no checkpoint is then half written)
# Either again resumes (the benchmark skips scored pairs and resumes trainings from their checkpoints).
# Env: DATASET (990), SEEDS ("0 1 2"), EPOCHS (160), METHOD_GROUPS (';'-separated, one process each),
# BENCH_ARGS (more benchmark options, e.g. "--registration-iterations 300"), and nnU-Net's nnUNet_raw,
# nnUNet_preprocessed (the dataset planned with `nnunetv2-oneshot plan ID --cpu`), nnUNet_results.
set -uo pipefail
mode=${1:?usage: gpu_benchmark.sh start B | wait B OUT SECONDS | stop B}; B=$(realpath -m "${2:?benchmark folder}")
DATASET=${DATASET:-990}; SEEDS=${SEEDS:-"0 1 2"}; EPOCHS=${EPOCHS:-160}
IFS=';' read -r -a GROUPS_ <<< "${METHOD_GROUPS:-OneShotDistillTrainer atlas_propagation;nnUNetTrainer_1label;nnUNetTrainer_all_labels}"
common=(benchmark "$DATASET" -o "$B" --seeds $SEEDS --jobs 3 --epochs "$EPOCHS" -device cuda --no-cost ${BENCH_ARGS:-})
# the GPU does the arithmetic: one torch thread per process; no torch.compile (minutes of CPU per process)
export OMP_NUM_THREADS=1 nnUNet_compile=${nnUNet_compile:-f} PYTHONUNBUFFERED=1
export nnUNet_n_proc_DA=${nnUNet_n_proc_DA:-2} nnUNet_def_n_proc=${nnUNet_def_n_proc:-2}
mkdir -p "$B/logs"

running() { local f; for f in "$B"/logs/group*.pid; do [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && return 0; done; return 1; }

if [ "$mode" = start ]; then
    if running; then echo "already running in $B"; exit 0; fi
    for i in "${!GROUPS_[@]}"; do
        nice_=(); [[ ${GROUPS_[$i]} == *all_labels* ]] && nice_=(nice -n 10)
        setsid "${nice_[@]}" nnunetv2-oneshot "${common[@]}" --methods ${GROUPS_[$i]} \
            > "$B/logs/group$i.out" 2>&1 < /dev/null &
        echo $! > "$B/logs/group$i.pid"
        echo "started ${GROUPS_[$i]} (pid $!), output in $B/logs/group$i.out"
        sleep 15  # each run writes config.json once at its start; the next one reads it to check it matches
    done
    exit 0
fi

if [ "$mode" = stop ]; then
    # each group leads its own process group (setsid): stop it with its trainings and data-loading workers
    for f in "$B"/logs/group*.pid; do [ -f "$f" ] && kill -- -"$(cat "$f")" 2>/dev/null; done
    for _ in $(seq 30); do running || break; sleep 1; done
    running && echo "still running in $B" || echo "stopped the runs in $B"
    exit 0
fi

[ "$mode" = wait ] || { echo "unknown mode $mode"; exit 2; }
OUT=$(realpath -m "${3:?OUT}"); SECS=${4:?SECONDS}; end=$((SECONDS + SECS)); mkdir -p "$OUT"
while running && [ $SECONDS -lt $end ]; do
    sleep 30
    scored=$(ls "$B"/seed*/scores/*.json 2>/dev/null | wc -l)
    epochs=$(for f in "$B"/logs/train_seed*.log; do [ -f "$f" ] && printf '%s:%s ' \
        "$(basename "$f" .log | sed 's/train_//')" "$(grep -c 'Epoch time' "$f")"; done)
    echo "$(date -u +%T) scored $scored; epochs $epochs"
done
running && echo "still running after $SECS s" || echo "all groups finished"
grep -h "failed\|Error\|error:" "$B"/logs/group*.out | tail -n 5
all_methods=$(echo "${GROUPS_[@]}")
nnunetv2-oneshot "${common[@]}" --report-only --methods $all_methods 2>&1 | tail -n 20
(cd "$B" && tar czf "$OUT/gpu_benchmark.tar.gz" \
    $(ls -d config.json seed*/scores logs/*.out logs/*.log *.json *.md *.png 2>/dev/null | sort -u))
# not yet scored (a lease can end in between): the final checkpoints of the trained models and the latest of
# those still training, in parts of at most 15 MiB, so that the same benchmark rerun elsewhere, any -device,
# scores the first without training again and resumes the others from their last checkpoint:
#   cat models.tar.part* | tar x -C B2  (B2 holding the unpacked gpu_benchmark.tar.gz), then the benchmark on B2
python3 - "$B" $all_methods > "$B/unscored.txt" <<'EOF'
import glob, json, os, sys
from nnunetv2_oneshot.benchmark.run import Benchmark
b, methods = sys.argv[1], sys.argv[2:]
cfg = json.load(open(os.path.join(b, "config.json")))
seeds = sorted(int(os.path.basename(d)[4:]) for d in glob.glob(os.path.join(b, "seed*")))
bench = Benchmark(cfg["dataset"], b, methods, seeds, cfg["budget"], cfg["plans"], cfg["device"], report_only=True)
for f in bench.unscored_model_files():
    print(f)
EOF
if [ -s "$B/unscored.txt" ]; then
    echo "trained, not scored: $(grep -c checkpoint_final "$B/unscored.txt") models; still training:" \
        "$(grep -c checkpoint_latest "$B/unscored.txt"); packed into $OUT/models.tar.part*"
    (cd "$B" && sort -u unscored.txt | tar cf - -T - | split -b 15m - "$OUT/models.tar.part")
fi
