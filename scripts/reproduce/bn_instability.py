"""Issue 15's instability question: does the held-out accuracy swing from epoch to epoch because of
BatchNorm statistics updated hospital by hospital? Runs (or reuses) `dg-benchmark` on the shared-shortcut
benchmark twice, with classifier.bn_stats=running and =pooled, and compares per rule: held-out accuracy at
the epoch chosen by training-hospital validation and by the oracle slice (mean ± SE over seeds), the mean
absolute epoch-to-epoch change of held-out accuracy, the share of epochs where it collapses to <= 0.3,
and the training hospitals' validation accuracy over the same epochs. Writes docs/results/bn_instability.*.

    python scripts/reproduce/bn_instability.py [--seeds 3] [--rules erm,agr_sum] [--domain H1]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import shlex
import subprocess
import sys
import time
from itertools import pairwise
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The setting of the measurement (clean labels; bn_stats is the variable), whatever the config now says.
SETTINGS = ["classifier.classes=[A,D]", "data.image_size=96", "classifier.epochs=12", "synth.label_noise=1.0"]
LATE = 4  # epochs before this are warm-up, left out of the swing statistics


def run(variant: str, args: argparse.Namespace) -> Path:
    out = Path(args.work) / variant
    exe, config = str(ROOT / ".venv" / "bin" / "medseg-weak"), str(ROOT / "configs/dg_cue_shared.yaml")
    command = [exe, "dg-benchmark", "--config", config, "--rules", args.rules, "--seeds", str(args.seeds),
               "--domains", args.domain, "--run-dir", str(out), "-q",
               *[a for s in [*SETTINGS, f"classifier.bn_stats={variant}"] for a in ("--set", s)]]  # fmt: skip
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return out / "dg" / args.domain


def mean_se(values: list[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    se = (
        math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1) / len(values))
        if len(values) > 1
        else 0.0
    )
    return m, se


def summarise(folder: Path, rule: str) -> dict[str, float]:
    per_seed = []
    for seed_dir in sorted((folder / rule).glob("seed*")):
        records = [json.loads(line) for line in (seed_dir / "records.jsonl").read_text().splitlines()]
        val = [r["val"]["accuracy"] for r in records]
        held = [r["heldout"]["accuracy"] for r in records]
        oracle = [r["oracle"]["accuracy"] for r in records]
        late = held[LATE:]
        per_seed.append({
            "training_domain": held[max(range(len(val)), key=val.__getitem__)],
            "oracle": held[max(range(len(oracle)), key=oracle.__getitem__)],
            "swing": sum(abs(b - a) for a, b in pairwise(late)) / (len(late) - 1),
            "collapsed": sum(v <= 0.3 for v in late) / len(late),
            "val_late": sum(val[LATE:]) / len(val[LATE:]),
            "held_range": max(late) - min(late),
        })  # fmt: skip
    return {k: mean_se([s[k] for s in per_seed]) for k in per_seed[0]} | {"seeds": len(per_seed)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rules", default="erm,agr_sum")
    parser.add_argument("--domain", default="H1")
    parser.add_argument("--work", default="/tmp/bn")
    parser.add_argument("--results", type=Path, default=ROOT / "docs" / "results")
    args = parser.parse_args()
    start = time.time()
    rows = []
    for variant in ("running", "pooled"):
        folder = run(variant, args)
        for rule in args.rules.split(","):
            rows.append({"bn_stats": variant, "rule": rule, **summarise(folder, rule)})
    keys = ["training_domain", "oracle", "swing", "collapsed", "held_range", "val_late"]
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    lines = [
        "# BatchNorm statistics and the held-out swings (shared-shortcut benchmark)",
        "",
        f"Command: `{command}`  ",
        f"Commit `{commit}`, seeds 0..{args.seeds - 1}, {time.time() - start:.0f} s on 2 CPU cores.  ",
        f"Setting: configs/dg_cue_shared.yaml with {', '.join(SETTINGS)}; held out {args.domain}; "
        f"swing statistics over epochs {LATE}..11.",
        "",
        "Columns: held-out accuracy at the epoch chosen by training-hospital validation and by the oracle "
        "slice; mean |change| of held-out accuracy between consecutive epochs; share of epochs with "
        "held-out accuracy <= 0.3; max - min of held-out accuracy; training hospitals' validation "
        "accuracy. Mean ± SE over seeds.",
        "",
        "| bn_stats | rule | " + " | ".join(keys) + " |",
        "|---|---|" + "---:|" * len(keys),
    ]  # fmt: skip
    for r in rows:
        lines.append(
            f"| {r['bn_stats']} | {r['rule']} | "
            + " | ".join(f"{r[k][0]:.3f} ± {r[k][1]:.3f}" for k in keys)
            + " |"
        )
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["bn_stats", "rule", *(f"{k}_{s}" for k in keys for s in ("mean", "se")), "seeds"])
    for r in rows:
        writer.writerow(
            [r["bn_stats"], r["rule"], *(f"{r[k][i]:.6f}" for k in keys for i in (0, 1)), r["seeds"]]
        )
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "bn_instability.md").write_text("\n".join(lines) + "\n")
    (args.results / "bn_instability.csv").write_text(buffer.getvalue())
    print("\n".join(lines))
    print(json.dumps({f"{r['bn_stats']}/{r['rule']}": {k: round(r[k][0], 4) for k in keys} for r in rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
