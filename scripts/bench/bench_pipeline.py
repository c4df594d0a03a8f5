"""Wall time of each pipeline stage on the demo config, in a fresh run directory.

There is no library path to compare a whole pipeline with; the figure to watch is the total against
the 5-minute budget on 2 CPU cores that the demo config is sized for. ``--leave-one-out`` times every
fold (one row per held-out hospital). Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import medseg_weak as mw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--leave-one-out", action="store_true", help="every hospital held out in turn")
    args = parser.parse_args()
    cfg = mw.config(args.config, args.overrides)
    kwargs = {"leave_one_out": args.leave_one_out, "progress": False}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        outcome = mw.run_pipeline(cfg, run_dir=Path(tmp) / "run", **kwargs)
        total = time.perf_counter() - start
        rerun_start = time.perf_counter()
        mw.run_pipeline(cfg, run_dir=Path(tmp) / "run", **kwargs)
        rerun = time.perf_counter() - rerun_start
    timings = {**outcome.timings, **{d: f.timings for d, f in outcome.folds.items()}}
    for stage, value in timings.items():
        if isinstance(value, dict):  # a leave-one-out fold
            print(f"{'held out ' + stage:<15} " + "  ".join(f"{k} {v:.1f} s" for k, v in value.items()))
        else:
            print(f"{stage:<15} {value:8.1f} s")
    print(f"{'total':<15} {total:8.1f} s   (budget 300 s -> {total / 300:.2f} of it)")
    print(f"{'rerun':<15} {rerun:8.1f} s   (every stage complete: skipped)")
    print(
        json.dumps(
            {
                "config": args.config,
                "leave_one_out": args.leave_one_out,
                "stages_s": timings,
                "total_s": round(total, 1),
                "rerun_s": round(rerun, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
