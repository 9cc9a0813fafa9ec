#!/usr/bin/env bash
# Creates .venv (once) and installs nnunetv2-oneshot into it, torch pinned to the local CPU wheel by
# constraints.txt (without the pin, timm -> torchvision would pull a ~6 GB CUDA torch). Safe to re-run.
# A normal (non-editable) install on purpose: nnU-Net finds our trainers through a shim file that only a
# wheel install puts into nnU-Net's folder (README, "How nnU-Net finds the trainers").
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  "$PY" -m venv .venv
fi
echo "[setup] installing nnunetv2-oneshot and its dependencies (first time: a few minutes)"
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt ".[test,sam]" 2>&1 \
  | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import nnunetv2_oneshot, nnunetv2, torch; print('[setup] ok: torch', torch.__version__)"
