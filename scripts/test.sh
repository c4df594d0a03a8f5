#!/usr/bin/env bash
# Install (or reuse) .venv, lint, and run the whole test suite, slow tests included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
# The report's browser test drives headless Chromium; install it where apt can (root, Debian/Ubuntu).
# Where it cannot, tests/report/test_browser.py is skipped and pytest -ra prints why.
if ! command -v chromedriver >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then sudo=""; elif command -v sudo >/dev/null 2>&1; then sudo="sudo -n"; else sudo=none; fi
    if [ "$sudo" != none ]; then
        echo "[test] installing chromium and chromium-driver for the report's browser test"
        { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium chromium-driver; } \
            >/dev/null 2>&1 || echo "[test] could not install chromium; the browser test will be skipped" >&2
    fi
fi
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# pytest exits 5 when it collected no tests; that is a failure here too (set -e).
.venv/bin/python -m pytest "$@"
