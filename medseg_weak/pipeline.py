"""`medseg-weak pipeline`: every stage in one run directory, each skipped when already done.

Stages read the previous stage's files, so a rerun after an interruption continues at the first
incomplete stage, and each stage's timing is kept in ``timings.json``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medseg_weak.config import Config
from medseg_weak.io_utils import atomic_write_text
from medseg_weak.rundir import RunDir

log = logging.getLogger(__name__)


def run_pipeline(
    cfg: Config, run_dir: str | Path | None = None, force: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Run data -> classifier -> cams; returns {stage: seconds} (also written to timings.json)."""
    from medseg_weak.classify.train import train_classifier
    from medseg_weak.data.prepare import prepare
    from medseg_weak.explain.stage import run_cams_stage

    run = RunDir.for_config(cfg, run_dir)
    run.write_provenance(cfg)
    state: dict[str, Any] = {}
    stages: list[tuple[str, Callable[[], Any]]] = [
        ("data", lambda: state.setdefault("manifest", prepare(cfg, run))),
        ("classifier", lambda: train_classifier(cfg, state["manifest"], run, force=force, progress=progress)),
        (
            "cams",
            lambda: run_cams_stage(
                cfg, state["manifest"], run, evaluate=True, force=force, progress=progress
            ),
        ),
    ]
    timings: dict[str, float] = {}
    for name, stage in stages:
        start = time.perf_counter()
        log.info("pipeline: %s", name)
        stage()
        timings[name] = round(time.perf_counter() - start, 2)
    atomic_write_text(run.root / "timings.json", json.dumps(timings, indent=2) + "\n")
    return timings
