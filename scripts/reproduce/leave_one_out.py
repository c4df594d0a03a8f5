"""The README's leave-one-out table: the demo pipeline with every hospital held out in turn, Dice of
CAM pseudo-masks, UNet on CAMs and the oracle UNet on each held-out hospital's images, per hospital and
for the fatty (A) and dense (D) classes. Writes docs/results/leave_one_out.{md,csv}.

    python scripts/reproduce/leave_one_out.py [--config configs/demo.yaml] [--run-dir runs/demo_loo]
"""

from __future__ import annotations

import argparse
import shutil
import time

from _common import RESULTS, ROOT, cell, medseg_weak, provenance, read_table

NAMES = {"cam": "CAM pseudo-masks", "unet_cam": "UNet on CAMs", "unet_truth": "oracle UNet"}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/demo.yaml")
    p.add_argument("--run-dir", default="runs/demo_loo")
    args = p.parse_args()
    start = time.time()
    medseg_weak("pipeline", "--config", args.config, "--leave-one-out", "--run-dir", args.run_dir, "-q")
    seconds = time.time() - start
    eval_dir = ROOT / args.run_dir / "eval"
    hospitals, classes = (
        read_table(eval_dir / "dice_by_hospital.csv"),
        read_table(eval_dir / "dice_by_class.csv"),
    )
    columns = [c[: -len("_mean")] for c in next(iter(hospitals.values())) if c.endswith("_mean")]
    domains = [c for c in columns if c != "all"]
    lines = [
        "# Leave-one-out on the demo benchmark: Dice on each held-out hospital",
        "",
        *provenance(seconds, args.config),
        "",
        "Each column is a hospital none of its fold's models saw (one pipeline per held-out hospital,",
        "`--leave-one-out`); all = every fold's held-out images pooled; fatty (A) / dense (D) = the pooled",
        "images of that (reader) label. Mean ± SE for all; per-image means elsewhere.",
        "",
        "| method | " + " | ".join(domains) + " | all | fatty (A) | dense (D) |",
        "|---|" + "---:|" * (len(domains) + 3),
    ]
    for key, name in NAMES.items():
        h, c = hospitals[key], classes[key]
        cells = [cell(h, d) for d in domains] + [cell(h, "all", se=True), cell(c, "A"), cell(c, "D")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "leave_one_out.md").write_text("\n".join(lines) + "\n")
    shutil.copyfile(eval_dir / "dice_by_hospital.csv", RESULTS / "leave_one_out.csv")
    shutil.copyfile(eval_dir / "dice_by_class.csv", RESULTS / "leave_one_out_by_class.csv")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
