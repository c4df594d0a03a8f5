"""The README's demo command on a fresh clone: how long each stage takes, what the held-out tables
say, and the report's size and writing time. Writes docs/results/demo_clean_clone.md.

    python scripts/reproduce/demo_clean_clone.py [--clone /tmp/clean_demo]

Clones this repository's HEAD, runs `bash scripts/demo.sh` there (creating its own .venv), and reads
the run directories it made. Run it on an otherwise idle machine: the stage times are the measurement.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _common import RESULTS, ROOT, START_COMMIT

AIM_S = 300  # issue 12: the demo's stages within 5 minutes on 2 CPU cores


def du_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def timing_table(timings: dict[str, float]) -> list[str]:
    stages = [k for k, v in timings.items() if isinstance(v, int | float)]
    total = sum(timings[k] for k in stages)
    return [
        "| " + " | ".join([*stages, "total"]) + " |",
        "|" + "---:|" * (len(stages) + 1),
        "| " + " | ".join([*(f"{timings[k]:.1f}" for k in stages), f"{total:.1f}"]) + " |",
    ]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clone", type=Path, default=Path("/tmp/clean_demo"))
    args = p.parse_args()
    shutil.rmtree(args.clone, ignore_errors=True)
    subprocess.run(["git", "clone", "-q", str(ROOT), str(args.clone)], check=True)
    start = time.time()
    demo = subprocess.run(["bash", "scripts/demo.sh"], cwd=args.clone, capture_output=True, text=True)
    wall = time.time() - start
    (args.clone / "demo.log").write_text(demo.stdout + demo.stderr)
    if demo.returncode != 0:
        print(demo.stdout[-3000:], demo.stderr[-3000:], file=sys.stderr)
        return demo.returncode
    runs = args.clone / "runs" / "demo"
    mammo = json.loads((runs / "timings.json").read_text())
    fundus = json.loads((runs / "fundus" / "timings.json").read_text())
    stages = sum(v for t in (mammo, fundus) for v in t.values() if isinstance(v, int | float))
    eval_md = (runs / "eval" / "dice_by_hospital.md").read_text().strip()
    report = runs / "report"
    footer = re.search(r"written by medseg-weak \S+ in ([\d.]+) s", (report / "index.html").read_text())
    rewrite = footer.group(1) if footer else "?"
    lines = [
        "# The demo from a clean clone",
        "",
        f"Command: `python {' '.join(sys.argv)}` (clones HEAD, then `bash scripts/demo.sh`: creates .venv, "
        "installs, runs).  ",
        f"Commit `{START_COMMIT}`; seed 0 (configs/demo.yaml, configs/demo_fundus.yaml); "
        f"{__import__('os').cpu_count()} CPU cores; exit code 0; {wall / 60:.1f} min wall in all, "
        "installing included.",
        "",
        "Mammography chain (`runs/demo`, H4 held out), seconds per stage:",
        "",
        *timing_table(mammo),
        "",
        "Fundus quality chain (`runs/demo/fundus`), seconds per stage:",
        "",
        *timing_table(fundus),
        "",
        f"The demo's stages take {stages:.0f} s in all: {'within' if stages <= AIM_S else 'over'} the "
        f"{AIM_S} s aim.",
        "",
        "Held-out H4 Dice (`runs/demo/eval/dice_by_hospital.md`):",
        "",
        eval_md,
        "",
        f"The report (`runs/demo/report/`, both runs): {du_mb(report):.1f} MB on disk "
        f"(gallery {du_mb(report / 'gallery'):.1f} MB, img {du_mb(report / 'img'):.1f} MB, "
        f"index.html {(report / 'index.html').stat().st_size / 1e3:.0f} kB); the report stage inside "
        f"the mammography pipeline (nothing cached) {mammo.get('report', float('nan')):.1f} s; the final "
        f"`medseg-weak report --run runs/demo` of both runs (overlays cached) {rewrite} s "
        "(the page's footer).",
    ]
    (RESULTS / "demo_clean_clone.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(json.dumps({"stages_s": round(stages, 1), "wall_s": round(wall), "aim_met": stages <= AIM_S}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
