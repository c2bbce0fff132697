#!/usr/bin/env bash
# Sets up a virtual environment and runs the test suite (fast tests, then the `slow` ones).
#
# Usage: scripts/run_tests.sh [VENV_DIR] [PYTEST_ARGS...]
# Environment: TRANSFORMERS_VERSION pins transformers (see scripts/setup_env.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv}"
shift || true
bash scripts/setup_env.sh "$venv" test,demo
"$venv/bin/python" -m pytest -q "$@"
