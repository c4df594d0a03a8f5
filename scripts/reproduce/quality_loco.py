"""Leave-one-camera-out EyeQ metrics of the quality model on the built-in fundus benchmark.

Each camera in turn is held out entirely (validation = 20 % of the other cameras' patients, so
nothing of the held-out camera leaks into model selection); the best checkpoint grades the held-out
camera. Writes docs/results/quality_loco.{json,md}: per held-out camera and pooled over the folds.

    python scripts/reproduce/quality_loco.py --out runs/quality_loco
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import sys
import time
from pathlib import Path

import torch

from medseg_weak.config import QualityConfig, SynthConfig
from medseg_weak.data.manifest import load_manifest
from medseg_weak.data.splits import leave_one_domain_out
from medseg_weak.data.synthetic import generate
from medseg_weak.io_utils import atomic_write_text
from medseg_weak.provenance import git_commit
from medseg_weak.quality.metrics import eyeq_metrics
from medseg_weak.quality.train import fit_quality

ROWS = (
    "n",
    "accuracy",
    "auroc",
    "f1_macro",
    "sensitivity_macro",
    "specificity_macro",
    "precision_macro",
    "specificity_micro",
    "f1_Good",
    "f1_Usable",
    "f1_Reject",
    "sensitivity_Reject",
    "specificity_Good",
    "mask_dice",
)


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/quality_loco"))
    p.add_argument("--results", type=Path, default=Path("docs/results"))
    p.add_argument("--n-per-camera", type=int, default=40)
    p.add_argument("--cameras", type=int, default=3)
    p.add_argument("--synth-size", type=int, default=96)
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--mask-weight", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    return p.parse_args()


def pooled(fold_dirs: list[Path], labels: list[str]) -> dict:
    """EyeQ metrics over every fold's held-out predictions together (each image graded once)."""
    probs, truth = [], []
    for folder in fold_dirs:
        with open(folder / "predictions.csv", newline="") as f:
            for row in csv.DictReader(f):
                probs.append([float(row[f"p_{c}"]) for c in labels])
                truth.append(labels.index(row["label"]))
    return eyeq_metrics(torch.tensor(probs), torch.tensor(truth), labels)


def markdown(table: dict[str, dict], command: str, args: argparse.Namespace, seconds: float) -> str:
    columns = list(table)
    lines = [
        "# Quality model: leave-one-camera-out EyeQ metrics (built-in fundus benchmark)",
        "",
        f"Command: `{command}`  ",
        f"Seed {args.seed}, commit `{git_commit()}`, {seconds / 60:.1f} min in all.  ",
        f"{args.cameras} cameras x {args.n_per_camera} photographs ({args.synth_size} px), model input "
        f"{args.size} px, UNet resnet18 depth 3, {args.epochs} epochs, mask_weight {args.mask_weight}.",
        "Each column is a camera no model of its fold saw; `pooled` scores all held-out images together.",
        "",
        "| metric | " + " | ".join(columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for row in ROWS:
        cells = []
        for c in columns:
            v = table[c].get(row)
            cells.append("-" if v is None else (str(v) if row == "n" else f"{v:.3f}"))
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    lines += ["", "Confusion matrices (rows = truth, columns = prediction; Good, Usable, Reject):", ""]
    lines += [f"- {c}: {table[c]['confusion']}" for c in columns]
    return "\n".join(lines) + "\n"


def main() -> int:
    args = parse()
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.time()
    synth = SynthConfig(
        kind="fundus", n_per_hospital=args.n_per_camera, hospitals=args.cameras, size=args.synth_size
    )
    manifest = load_manifest(generate(args.out / "data", synth, seed=args.seed))
    cfg = QualityConfig(
        encoder="resnet18",
        encoder_depth=3,
        decoder_channels=(32, 16, 8),
        epochs=args.epochs,
        batch_size=16,
        mask_weight=args.mask_weight,
    )
    table: dict[str, dict] = {}
    folds: list[Path] = []
    for camera in manifest.domains:
        split = leave_one_domain_out(manifest, camera, val_fraction=0.2, seed=args.seed)
        part = {s: split.subset([r for r in split.records if r.split == s]) for s in ("train", "val", "test")}
        out = args.out / "folds" / camera
        metrics = fit_quality(
            cfg, part["train"], part["val"], out, args.size, test=part["test"],
            cache_dir=args.out / "cache", seed=args.seed, progress=False,
        )  # fmt: skip
        table[camera] = metrics["test"]
        folds.append(out)
        print(camera, json.dumps({k: metrics["test"].get(k) for k in ROWS}), flush=True)
    table["pooled"] = pooled(folds, list(manifest.labels))
    seconds = time.time() - start
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    args.results.mkdir(parents=True, exist_ok=True)
    record = {
        "command": command,
        "seed": args.seed,
        "git_commit": git_commit(),
        "seconds": seconds,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "held_out": table,
    }
    atomic_write_text(args.results / "quality_loco.json", json.dumps(record, indent=2) + "\n")
    atomic_write_text(args.results / "quality_loco.md", markdown(table, command, args, seconds))
    print(json.dumps({c: {k: table[c].get(k) for k in ("accuracy", "auroc", "f1_macro")} for c in table}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
