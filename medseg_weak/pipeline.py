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
    """Run data -> classifier -> cams -> segmenter (+ oracle) -> eval; returns {stage: seconds}.

    The oracle segmenter (trained on the ground truth) and the evaluation run only when every image
    has a ground-truth mask, as the built-in benchmark does."""
    from medseg_weak.classify.train import train_classifier
    from medseg_weak.data.prepare import prepare
    from medseg_weak.evaluate.heldout import evaluate_heldout
    from medseg_weak.explain.stage import run_cams_stage
    from medseg_weak.segment.module import create_segmenter
    from medseg_weak.segment.train import train_all_segmenters, train_segmenter

    # Fail on a mistyped segmenter architecture or encoder now, not after the classifier has trained.
    create_segmenter(cfg.segmenter, load_encoder_weights=False)
    begin = time.perf_counter()
    run = RunDir.for_config(cfg, run_dir)
    run.write_provenance(cfg)
    manifest = prepare(cfg, run)  # generates the built-in data on first use
    has_truth = all(r.mask_path for r in manifest.records)
    stages: list[tuple[str, Callable[[], Any]]] = [
        ("classifier", lambda: train_classifier(cfg, manifest, run, force=force, progress=progress)),
        (
            "cams",
            lambda: run_cams_stage(cfg, manifest, run, evaluate=has_truth, force=force, progress=progress),
        ),
        ("segmenter", lambda: train_all_segmenters(cfg, manifest, run, force=force, progress=progress)),
    ]
    if has_truth:
        stages += [
            ("oracle", lambda: train_segmenter(cfg, manifest, run, "truth", force=force, progress=progress)),
            ("eval", lambda: evaluate_heldout(cfg, manifest, run)),
        ]
    timings: dict[str, float] = {"data": round(time.perf_counter() - begin, 2)}
    for name, stage in stages:
        start = time.perf_counter()
        log.info("pipeline: %s", name)
        stage()
        timings[name] = round(time.perf_counter() - start, 2)
    atomic_write_text(run.root / "timings.json", json.dumps(timings, indent=2) + "\n")
    return timings
