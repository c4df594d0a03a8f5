#!/usr/bin/env bash
# Issue 15's classifier-only table: every held-out hospital x recipe x seed of `dg-benchmark`, with
# all three selection rules and four held-out metrics. Writes docs/results/<name>.{md,csv,png}.
#   bash scripts/reproduce/dg_recipes.sh [config] [name] [seeds] [recipes]
# Defaults: configs/dg_cue_shared.yaml (shared-shortcut positive control), dg_shared, 5 seeds,
# erm,aug,agr_sum,pcgrad,aug+agr_sum,aug+pcgrad. The benchmark resumes: rerun the same command after
# an interruption and finished runs are skipped.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PWD/.venv/bin:$PATH"
config=${1:-configs/dg_cue_shared.yaml}
name=${2:-dg_shared}
seeds=${3:-5}
recipes=${4:-erm,aug,agr_sum,pcgrad,aug+agr_sum,aug+pcgrad}
run=${RUN_DIR:-runs/$name}
start=$(date +%s)
medseg-weak dg-benchmark --config "$config" --recipes "$recipes" --seeds "$seeds" --run-dir "$run" -q >/dev/null
seconds=$(( $(date +%s) - start ))
out=docs/results
mkdir -p "$out"
cp "$run/dg/summary.csv" "$out/$name.csv"
cp "$run/dg/table_training_domain.png" "$out/$name.png"
{
  echo "# dg-benchmark: held-out hospital x recipe ($config)"
  echo
  echo "Command: \`bash scripts/reproduce/dg_recipes.sh $config $name $seeds $recipes\`  "
  echo "Commit \`$(git rev-parse HEAD)\`, seeds 0..$((seeds - 1)), $(nproc --all) CPU cores, ${seconds} s (finished runs are reused on reruns).  "
  echo "Config: \`$config\` (synth seed 0). Rows = recipe (a gradient rule, \`aug\` = scanner-shift augmentation, or both);"
  echo "columns = held-out hospital and the average over hospitals; cells = mean ± SE over seeds of the held-out"
  echo "score at the epoch each selection rule picks (training_domain: training hospitals' validation; oracle:"
  echo "20 % of the held-out hospital's patients; last). The CSV ($name.csv) holds every cell with its count."
  echo
  cat "$run/dg/summary.md"
} > "$out/$name.md"
head -30 "$out/$name.md"
