"""`medseg-weak pipeline`: every stage in one run directory, each skipped when already done.

Stages read the previous stage's files, so a rerun after an interruption continues at the first
incomplete stage, and each stage's timing is kept in ``timings.json``.

With ``leave_one_out`` every hospital is held out in turn: the data is resolved once in the run
directory, each fold is a complete run in ``folds/<hospital>/`` (its own config.yaml with
``data.test_domain`` set), and ``eval/`` pools the folds' held-out images into one table whose
columns are the held-out hospitals.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medseg_weak.config import Config
from medseg_weak.data.manifest import Manifest
from medseg_weak.errors import ConfigError
from medseg_weak.io_utils import atomic_write_text
from medseg_weak.rundir import RunDir

log = logging.getLogger(__name__)
FOLDS = "folds"
FOLDS_FILE = "folds.json"  # {"held_out": [hospital, ...]}: marks a leave-one-out run and its folds


def run_pipeline(
    cfg: Config, run_dir: str | Path | None = None, force: bool = False, progress: bool = True
) -> dict[str, float]:
    """Run data -> classifier -> cams -> segmenter (+ oracle) -> eval; returns {stage: seconds}.

    The oracle segmenter (trained on the ground truth) and the evaluation run only when every image
    has a ground-truth mask, as the built-in benchmark does."""
    from medseg_weak.data.prepare import prepare

    _check_segmenter(cfg)
    begin = time.perf_counter()
    run = RunDir.for_config(cfg, run_dir)
    if (run.root / FOLDS).is_dir():
        raise ConfigError(
            f"{run.root} holds a leave-one-out run (folds/); add --leave-one-out or use another --run-dir"
        )
    run.write_provenance(cfg, force=force)
    manifest = prepare(cfg, run)  # generates the built-in data on first use
    timings = {
        "data": round(time.perf_counter() - begin, 2),
        **_run_stages(cfg, manifest, run, force, progress),
    }
    atomic_write_text(run.root / "timings.json", json.dumps(timings, indent=2) + "\n")
    return timings


def run_leave_one_out(
    cfg: Config, run_dir: str | Path | None = None, force: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Hold out each hospital in turn (a whole pipeline per fold); pool the held-out evaluations.

    The run directory defaults to ``<runs_dir>/<name>_loo``.
    Returns {"data": seconds, <hospital>: {stage: seconds}, ..., "eval": seconds}."""
    from medseg_weak.data.prepare import resolve_manifest, split_manifest
    from medseg_weak.evaluate.heldout import evaluate_folds

    _check_segmenter(cfg)
    if cfg.data.test_domain:
        raise ConfigError(
            f"'data.test_domain' is '{cfg.data.test_domain}', but leave-one-out holds out every "
            "hospital in turn; remove it"
        )
    begin = time.perf_counter()
    run = leave_one_out_dir(cfg, run_dir)
    if (run.stage("classifier") / "stage.json").is_file():
        raise ConfigError(f"{run.root} holds a single pipeline run; use another --run-dir for leave-one-out")
    run.write_provenance(cfg, force=force)
    full = resolve_manifest(cfg, run)
    domains = full.domains
    if len(domains) < 2:
        raise ConfigError(f"{full.source}: leave-one-out needs at least two hospitals, found {len(domains)}")
    atomic_write_text(run.root / FOLDS_FILE, json.dumps({"held_out": domains}, indent=2) + "\n")
    timings: dict[str, Any] = {"data": round(time.perf_counter() - begin, 2)}
    for i, domain in enumerate(domains, 1):
        log.info("leave-one-out: fold %d/%d, %s held out", i, len(domains), domain)
        fold_cfg = fold_config(cfg, run, full, domain)
        fold = fold_run(run, domain)
        fold.write_provenance(fold_cfg, force=force)
        manifest = split_manifest(fold_cfg, full)
        timings[domain] = _run_stages(fold_cfg, manifest, fold, force, progress)
        atomic_write_text(fold.root / "timings.json", json.dumps(timings[domain], indent=2) + "\n")
    if _has_truth(full):
        start = time.perf_counter()
        evaluate_folds(run, domains, list(full.labels))
        timings["eval"] = round(time.perf_counter() - start, 2)
    atomic_write_text(run.root / "timings.json", json.dumps(timings, indent=2) + "\n")
    return timings


def leave_one_out_dir(cfg: Config, run_dir: str | Path | None = None) -> RunDir:
    """``run_dir``, else ``<runs_dir>/<name>_loo``: next to, not inside, the single run of the config."""
    return RunDir(Path(run_dir) if run_dir is not None else Path(cfg.runs_dir) / f"{cfg.name}_loo")


def held_out_domains(run: RunDir) -> list[str] | None:
    """The hospitals of a leave-one-out run, in fold order; None for a single run."""
    path = run.root / FOLDS_FILE
    return json.loads(path.read_text())["held_out"] if path.is_file() else None


def fold_run(run: RunDir, domain: str) -> RunDir:
    return RunDir(run.root / FOLDS / domain)


def fold_config(cfg: Config, run: RunDir, manifest: Manifest, domain: str) -> Config:
    """The fold's config: ``domain`` held out; the run's data and cache shared by every fold."""
    data = dataclasses.replace(
        cfg.data,
        test_domain=domain,
        manifest=str(Path(manifest.source).resolve()),
        cache_dir=cfg.data.cache_dir or str((run.root / "cache").resolve()),
    )
    return dataclasses.replace(cfg, data=data)


def _check_segmenter(cfg: Config) -> None:
    """Fail on a mistyped segmenter architecture or encoder now, not after the classifier has trained."""
    from medseg_weak.segment.module import create_segmenter

    create_segmenter(cfg.segmenter, load_encoder_weights=False)


def _has_truth(manifest: Manifest) -> bool:
    return all(r.mask_path for r in manifest.records)


def _run_stages(
    cfg: Config, manifest: Manifest, run: RunDir, force: bool, progress: bool
) -> dict[str, float]:
    from medseg_weak.classify.train import train_classifier
    from medseg_weak.evaluate.heldout import evaluate_heldout
    from medseg_weak.explain.stage import run_cams_stage
    from medseg_weak.segment.train import check_weak_label_classes, train_all_segmenters, train_segmenter

    check_weak_label_classes(cfg.segmenter, manifest)  # before the classifier trains, not after
    has_truth = _has_truth(manifest)
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
    timings: dict[str, float] = {}
    for name, stage in stages:
        start = time.perf_counter()
        log.info("pipeline: %s (%s)", name, run.root)
        stage()
        timings[name] = round(time.perf_counter() - start, 2)
    return timings
