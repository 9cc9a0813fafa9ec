#!/usr/bin/env bash
# The test command of the README: set-up, then the whole test suite (CPU; 30 minutes on 2 AVX2-only cores).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# 2-core machines: nnU-Net defaults to 8+ worker processes otherwise
export nnUNet_def_n_proc=${nnUNet_def_n_proc:-1} nnUNet_n_proc_DA=${nnUNet_n_proc_DA:-1}
# --durations: the slowest tests in the log, to keep the suite within its CI budget. One test at a time:
# with pytest-xdist (-n 2 --dist loadfile) the suite took 40.8 min against 40.6 serially on 2 AVX2 cores, as
# the serial run keeps the cores busy already (the xdist run used 77 CPU-minutes in 41); each nnU-Net process
# spends ~10 s of CPU on importing nnU-Net alone.
exec .venv/bin/python -m pytest -q --durations=12 tests "$@"
