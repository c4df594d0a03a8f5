"""Wall time of each pipeline stage on the demo config, in a fresh run directory.

There is no library path to compare a whole pipeline with; the figure to watch is the total against
the 5-minute budget on 2 CPU cores that the demo config is sized for. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from medseg_weak.config import load_config
from medseg_weak.pipeline import run_pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    cfg = load_config(args.config, args.overrides)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        timings = run_pipeline(cfg, Path(tmp) / "run", progress=False)
        total = time.perf_counter() - start
        rerun_start = time.perf_counter()
        run_pipeline(cfg, Path(tmp) / "run", progress=False)
        rerun = time.perf_counter() - rerun_start
    for stage, seconds in timings.items():
        print(f"{stage:<11} {seconds:8.1f} s")
    print(f"{'total':<11} {total:8.1f} s   (budget 300 s -> {total / 300:.2f} of it)")
    print(f"{'rerun':<11} {rerun:8.1f} s   (every stage complete: skipped)")
    print(
        json.dumps(
            {
                "config": args.config,
                "stages_s": timings,
                "total_s": round(total, 1),
                "rerun_s": round(rerun, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
