#!/usr/bin/env bash
# The main job on the built-in demo data: generate the multi-hospital benchmark, check and preview it,
# run the pipeline: density classifier -> CAM pseudo-masks -> UNet on them (and an oracle UNet on the
# truth) -> evaluation on the test images.
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
medseg-weak synth fundus --out "$out/fundus" --n-per-hospital 12 --hospitals 3 --size 256 --seed 0 --workers 2
medseg-weak data check "$out/fundus/manifest.csv"
medseg-weak data preview "$out/fundus/manifest.csv" --out "$out/preview_fundus.png" --set data.kind=fundus
echo "demo done: previews in $out/, classifier metrics in $out/classifier/, CAM overlays in $out/cams/overlay/, held-out tables in $out/eval/"
medseg-weak report --run "$out" -q   # the page again, now with the fundus preview too (overlays come from the cache)
echo "open the report: $PWD/$out/report/index.html"
