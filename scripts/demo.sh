#!/usr/bin/env bash
# The main job on the built-in demo data: generate the multi-hospital benchmark, check and preview it,
# run the pipeline: density classifier -> CAM pseudo-masks -> UNet on them (and an oracle UNet on the
# truth) -> evaluation on the unseen hospital; then the fundus quality model with its
# interpretability and invariance reports (a run nested in the demo's); one report page of it all.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export PATH="$PWD/.venv/bin:$PATH"

config=configs/demo.yaml
out=runs/demo
medseg-weak synth mammo --out "$out/data" --config "$config"
medseg-weak data check "$out/data/manifest.csv"
medseg-weak data preview "$out/data/manifest.csv" --out "$out/preview_mammo.png"
medseg-weak pipeline --config "$config" --test-domain H4   # classifier -> CAMs -> UNet (+ oracle) -> eval on unseen H4
# quality model (Good/Usable/Reject + where degraded) -> interpretability -> invariance, in runs/demo/fundus
medseg-weak pipeline --config configs/demo_fundus.yaml --run-dir "$out/fundus"
medseg-weak data check "$out/fundus/data/manifest.csv" --set data.kind=fundus
medseg-weak data preview "$out/fundus/data/manifest.csv" --out "$out/preview_fundus.png" --set data.kind=fundus
echo "demo done: classifier metrics in $out/classifier/, CAM overlays in $out/cams/overlay/, held-out tables in $out/eval/, the quality model and its reports in $out/fundus/"
medseg-weak report --run "$out" -q   # the page of both runs (overlays come from the cache)
echo "open the report: $PWD/$out/report/index.html"
