#!/usr/bin/env bash
# Issue 15's tables: `dg-benchmark` over held-out hospital x recipe x seed. Writes docs/results/<name>.{md,csv,png}.
#   bash scripts/reproduce/dg_recipes.sh [config] [name] [seeds] [recipes]
# Defaults: configs/dg_cue_shared.yaml (shared-shortcut benchmark), dg_shared, 5 seeds,
# erm,aug,agr_sum,pcgrad,aug+agr_sum,aug+pcgrad; every hospital held out in turn (DOMAINS=H1,H4 for some).
# CHAIN=1 runs the whole chain per run (classifier, CAMs, UNet on CAMs, oracle; held-out Dice) instead
# of the classifier alone. SET="key=value ..." passes config overrides (--set) to every run. The benchmark resumes: rerun the same command after an interruption, or with
# more seeds, and finished runs are reused.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PWD/.venv/bin:$PATH"
config=${1:-configs/dg_cue_shared.yaml}
name=${2:-dg_shared}
seeds=${3:-5}
recipes=${4:-erm,aug,agr_sum,pcgrad,aug+agr_sum,aug+pcgrad}
run=${RUN_DIR:-runs/$name}
args=(--config "$config" --recipes "$recipes" --seeds "$seeds" --run-dir "$run" -q)
[ -n "${DOMAINS:-}" ] && args+=(--domains "$DOMAINS")
for kv in ${SET:-}; do args+=(--set "$kv"); done
folder=dg table=table_training_domain what="classifier: held-out score at the epoch each selection rule picks (training_domain: training hospitals' validation; oracle: 20 % of the held-out hospital's patients; last)"
if [ -n "${CHAIN:-}" ]; then
  args+=(--chain)
  folder=chain table=table_dice what="whole chain: mean held-out Dice of each run's CAM pseudo-masks, UNet on CAMs and oracle UNet, and its classifier's held-out metrics (its own training-domain selection)"
fi
start=$(date +%s)
commit=$(git rev-parse HEAD)  # the code the benchmark ran, not whatever HEAD is when it ends
medseg-weak dg-benchmark "${args[@]}" >/dev/null
seconds=$(( $(date +%s) - start ))
out=docs/results
mkdir -p "$out"
if [ -n "${CHAIN:-}" ]; then cp "$run/$folder/table_dice.csv" "$out/$name.csv"; else cp "$run/$folder/summary.csv" "$out/$name.csv"; fi
cp "$run/$folder/$table.png" "$out/$name.png"
{
  echo "# dg-benchmark: held-out hospital x recipe ($config)"
  echo
  echo "Command: \`${CHAIN:+CHAIN=1 }${DOMAINS:+DOMAINS=$DOMAINS }${SET:+SET=\"$SET\" }bash scripts/reproduce/dg_recipes.sh $config $name $seeds $recipes\`  "
  echo "Commit \`$commit\`, seeds 0..$((seeds - 1)), $(nproc --all) CPU cores, ${seconds} s (finished runs are reused on reruns).  "
  echo "Versions: $(.venv/bin/python -c 'from medseg_weak.provenance import environment_info as e; print(", ".join(f"{k} {v}" for k, v in e()["versions"].items() if v))').  "
  echo "Config: \`$config\` (synth seed 0). Rows = recipe (a gradient rule, \`aug\` = scanner-shift augmentation, \`adabn\` = per-hospital BatchNorm statistics at test and CAM time, joined by +);"
  echo "columns = held-out hospital and the average over hospitals; cells = mean ± SE over seeds. Measured: $what."
  echo "The CSV ($name.csv) holds every cell with its count."
  echo
  cat "$run/$folder/summary.md"
  if [ -f "$run/$folder/conflicts.md" ]; then  # what the gradient rules saw (classifier.surgery.diagnostics_every)
    echo
    echo "### gradient conflicts seen during training (every logged step of every run, pooled per recipe)"
    echo
    cat "$run/$folder/conflicts.md"
  fi
} > "$out/$name.md"
head -40 "$out/$name.md"
