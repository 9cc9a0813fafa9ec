#!/usr/bin/env bash
# The main job of the README: set-up, then the demo on the embedded brain dataset (all files under
# ./demo_output; nothing outside it is touched). Extra arguments go to `nnunetv2-oneshot demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export nnUNet_def_n_proc=${nnUNet_def_n_proc:-1} nnUNet_n_proc_DA=${nnUNet_n_proc_DA:-1}
exec .venv/bin/nnunetv2-oneshot demo "$@"
