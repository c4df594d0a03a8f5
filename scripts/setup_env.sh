#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv and install medseg-weak into it.
# Idempotent: a stamp records what was installed, so a second run only checks and returns.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
# This torch/torchvision pair installs from local wheels on the project's machines and imports together;
# elsewhere pip fetches it from PyPI. pyproject.toml itself only states lower bounds.
TORCH_PINS=${TORCH_PINS:-"torch==2.14.1 torchvision==0.29.1"}
# Every other package at the version the committed results were made with (a fresh install resolving
# the newest versions changed the demo's held-out Dice); CONSTRAINTS= installs without them.
CONSTRAINTS=${CONSTRAINTS-constraints.txt}

if [ ! -x .venv/bin/python ]; then
    echo "[setup] creating .venv with $($PYTHON --version)"
    "$PYTHON" -m venv .venv
fi

stamp=.venv/.medseg-weak-installed
want="$(cat pyproject.toml scripts/setup_env.sh ${CONSTRAINTS:+"$CONSTRAINTS"} | sha256sum | cut -d' ' -f1) $TORCH_PINS"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && .venv/bin/python -c "import medseg_weak" 2>/dev/null; then
    exit 0
fi

echo "[setup] installing $TORCH_PINS and medseg-weak[dev] into .venv (first run takes a few minutes)"
log=.venv/pip-install.log
pip_install() {
    .venv/bin/python -m pip install ${CONSTRAINTS:+-c "$CONSTRAINTS"} "$@" >>"$log" 2>&1 || { tail -n 30 "$log" >&2; echo "[setup] pip install $* failed (full log: $log)" >&2; exit 1; }
}
: >"$log"
# shellcheck disable=SC2086
pip_install $TORCH_PINS
pip_install -e '.[dev]'
# tmeasures, for the invariance comparison test only: --no-deps, because it declares opencv-python,
# which clashes with the opencv-python-headless that grad-cam uses (both install cv2); statsmodels is
# what it imports without declaring.
pip_install statsmodels
pip_install --no-deps "tmeasures==1.2.11"
.venv/bin/python -c "import torch, torchvision, medseg_weak" || { echo "[setup] install failed" >&2; exit 1; }
echo "$want" > "$stamp"
