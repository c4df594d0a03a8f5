#!/usr/bin/env bash
# Install (or reuse) .venv, lint, and run the whole test suite, slow tests included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# pytest exits 5 when it collected no tests; that is a failure here too (set -e).
.venv/bin/python -m pytest "$@"
