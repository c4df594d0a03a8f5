#!/usr/bin/env bash
# The main job on the built-in demo data: generate the multi-hospital benchmark, check it, preview it.
# Grows with the pipeline (classify -> explain -> segment -> evaluate -> report).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export PATH="$PWD/.venv/bin:$PATH"

out=runs/demo
medseg-weak synth mammo --out "$out/data" --n-per-hospital 32 --hospitals 4 --height 384 --seed 0 --workers 2
medseg-weak data check "$out/data/manifest.csv"
medseg-weak data preview "$out/data/manifest.csv" --out "$out/preview_mammo.png"
medseg-weak synth fundus --out "$out/fundus" --n-per-hospital 12 --hospitals 3 --size 256 --seed 0 --workers 2
medseg-weak data check "$out/fundus/manifest.csv"
medseg-weak data preview "$out/fundus/manifest.csv" --out "$out/preview_fundus.png" --set data.kind=fundus
echo "demo done: see $out/preview_mammo.png and $out/preview_fundus.png"
