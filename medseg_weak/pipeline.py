"""The plans: which stages run, in which order, for one run or for every leave-one-out fold.

``pipeline`` is a list of stages run by the one runner (``medseg_weak.stages.Runner``); each CLI
verb runs one stage (or the plan up to it) the same way, and leave-one-out is the same plan per
fold: the data is resolved once in the run directory, each fold is a complete run in
``folds/<hospital>/`` (its own config.yaml with ``data.test_domain`` set), and ``eval/`` pools the
folds' held-out images into one table whose columns are the held-out hospitals.

Every stage of a plan (every fold's, for leave-one-out) is validated before the first one starts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from medseg_weak.config import Config
from medseg_weak.data.kinds import get_kind, resolve_kind_defaults
from medseg_weak.data.manifest import Manifest, load_manifest
from medseg_weak.errors import ConfigError
from medseg_weak.io_utils import atomic_write_text
from medseg_weak.lock import RunLock
from medseg_weak.rundir import FOLDS, FOLDS_FILE, RunDir
from medseg_weak.stages import DataSummary, Runner, Stage, StageResult

log = logging.getLogger(__name__)


@dataclass
class RunOutcome:
    """What a plan produced: the run directory, each stage's typed result, seconds per stage."""

    run: RunDir
    results: dict[str, StageResult] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    folds: dict[str, RunOutcome] = field(default_factory=dict)  # leave-one-out: one per held-out hospital


def data_summary(cfg: Config) -> DataSummary:
    """Labels, hospitals and masks of the configured data, read without decoding an image (the
    built-in benchmark's come from its config: nothing is generated to validate a plan)."""
    if cfg.data.manifest:
        manifest = load_manifest(Path(cfg.data.manifest), cfg.data.labels or None, check_files=False)
        return DataSummary(
            str(manifest.source),
            tuple(manifest.labels),
            tuple(manifest.domains),
            all(r.mask_path for r in manifest.records),
        )
    kind = get_kind(cfg.synth.kind, "synth.kind")
    if cfg.synth.kind != cfg.data.kind:
        raise ConfigError(
            f"'data.kind' is '{cfg.data.kind}' but the built-in benchmark is 'synth.kind' = "
            f"'{cfg.synth.kind}'; set both to the same kind (or give data.manifest)"
        )
    return DataSummary(
        f"the built-in {kind.name} benchmark",
        tuple(cfg.data.labels or kind.labels),
        kind.synthetic_domains(cfg.synth.hospitals),
        True,
    )


def prepare_config(cfg: Config) -> Config:
    """The config as a run stores it: data-kind defaults filled in (channels, CAM target)."""
    return resolve_kind_defaults(cfg)


def pipeline_plan(cfg: Config, has_truth: bool) -> list[Stage]:
    """The data kind's chain, then the report (the page of everything before it).

    ``segment`` (mammograms): classifier -> cams -> segmenter (+ self-training rounds) [-> oracle ->
    eval, with ground truth]. ``quality`` (fundus photographs): the quality model -> its
    interpretability -> its invariance."""
    if get_kind(cfg.data.kind).chain == "quality":
        from medseg_weak.interpret.stage import InterpretStage
        from medseg_weak.invariance.stage import InvarianceStage
        from medseg_weak.quality.stage import QualityStage

        plan: list[Stage] = [QualityStage(), InterpretStage(cfg), InvarianceStage(cfg)]
    else:
        from medseg_weak.classify.stage import ClassifierStage
        from medseg_weak.evaluate.stage import EvalStage
        from medseg_weak.explain.stage import CamsStage
        from medseg_weak.segment.stage import SegmenterStage, segmenter_stages

        plan = [ClassifierStage(), CamsStage(evaluate=has_truth), *segmenter_stages(cfg)]
        if has_truth:
            plan += [SegmenterStage("truth"), EvalStage(cfg)]
    from medseg_weak.report.stage import ReportStage

    return [*plan, ReportStage([s.name for s in plan])]


def run_plan(
    cfg: Config,
    run: RunDir,
    plan: Sequence[Stage] | None = None,
    *,
    force: bool = False,
    progress: bool = True,
    redo: Sequence[str] = (),
    allow: tuple[str, ...] = (),
    lock: bool = True,
) -> RunOutcome:
    """Validate every stage of ``plan`` (default: the whole pipeline), then run it in ``run``.

    ``allow``: config sections this plan may change in an existing run (see RunDir.write_provenance).
    ``lock``: hold the run directory's lock (one process per run); shards of one stage share a run."""
    from medseg_weak.data.prepare import prepare

    cfg = prepare_config(cfg)
    summary = data_summary(cfg)
    plan = list(plan) if plan is not None else pipeline_plan(cfg, summary.has_truth)
    Runner.validate(plan, cfg, summary)
    if (run.root / FOLDS).is_dir():
        raise ConfigError(
            f"{run.root} holds a leave-one-out run (folds/); add --leave-one-out or use another --run-dir"
        )
    with RunLock(run.root) if lock else contextlib.nullcontext():
        begin = time.perf_counter()
        run.write_provenance(cfg, force=force, allow=allow)
        manifest = prepare(cfg, run)  # generates the built-in data on first use
        runner = Runner(cfg, run, force=force, progress=progress, redo=redo)
        runner.timings["data"] = round(time.perf_counter() - begin, 2)
        results = runner.execute(plan, manifest)
    return RunOutcome(run, results, dict(runner.timings))


def leave_one_out_dir(cfg: Config, run_dir: str | Path | None = None) -> RunDir:
    """``run_dir``, else ``<runs_dir>/<name>_loo``: next to, not inside, the single run of the config."""
    return RunDir(Path(run_dir) if run_dir is not None else Path(cfg.runs_dir) / f"{cfg.name}_loo")


def fold_config(cfg: Config, run: RunDir, manifest: Manifest, domain: str) -> Config:
    """The fold's config: ``domain`` held out; the run's data and cache shared by every fold."""
    from medseg_weak.data.prepare import cache_dir

    data = dataclasses.replace(
        cfg.data,
        test_domain=domain,
        manifest=str(Path(manifest.source).resolve()),
        cache_dir=str(cache_dir(cfg, run).resolve()),
    )
    return dataclasses.replace(cfg, data=data)


def run_leave_one_out(
    cfg: Config, run: RunDir, *, force: bool = False, progress: bool = True, redo: Sequence[str] = ()
) -> RunOutcome:
    """Hold out each hospital in turn (a whole pipeline per fold); pool the held-out evaluations."""
    cfg = prepare_config(cfg)
    if cfg.data.test_domain:
        raise ConfigError(
            f"'data.test_domain' is '{cfg.data.test_domain}', but leave-one-out holds out every "
            "hospital in turn; remove it"
        )
    summary = data_summary(cfg)
    if len(summary.domains) < 2:
        raise ConfigError(f"{summary.source}: leave-one-out needs at least two hospitals")
    for domain in summary.domains:  # every fold's plan, before the first fold trains
        fold_cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, test_domain=domain))
        Runner.validate(pipeline_plan(fold_cfg, summary.has_truth), fold_cfg, summary)
    if run.read_state("classifier") is not None:
        raise ConfigError(f"{run.root} holds a single pipeline run; use another --run-dir for leave-one-out")
    with RunLock(run.root):
        return _leave_one_out(cfg, run, summary, force, progress, redo)


def _leave_one_out(
    cfg: Config, run: RunDir, summary: DataSummary, force: bool, progress: bool, redo: Sequence[str]
) -> RunOutcome:
    from medseg_weak.data.prepare import resolve_manifest, split_manifest
    from medseg_weak.evaluate.stage import PooledEvalStage
    from medseg_weak.report.stage import ReportStage

    begin = time.perf_counter()
    run.write_provenance(cfg, force=force)
    full = resolve_manifest(cfg, run)
    domains = full.domains
    atomic_write_text(run.root / FOLDS_FILE, json.dumps({"held_out": domains}, indent=2) + "\n")
    outcome = RunOutcome(run, timings={"data": round(time.perf_counter() - begin, 2)})
    for i, domain in enumerate(domains, 1):
        log.info("leave-one-out: fold %d/%d, %s held out", i, len(domains), domain)
        fold_cfg = fold_config(cfg, run, full, domain)
        fold = run.fold(domain)
        fold.write_provenance(fold_cfg, force=force)
        runner = Runner(fold_cfg, fold, force=force, progress=progress, redo=redo)
        plan = pipeline_plan(fold_cfg, summary.has_truth)
        results = runner.execute(plan, split_manifest(fold_cfg, full))
        outcome.folds[domain] = RunOutcome(fold, results, dict(runner.timings))
    if summary.has_truth and get_kind(cfg.data.kind).chain == "segment":
        pooled = Runner(cfg, run, force=force, progress=progress, redo=redo)
        pooled_eval = PooledEvalStage(run, domains, list(full.labels))
        outcome.results = pooled.execute([pooled_eval, ReportStage(["eval"])], full)
        outcome.timings.update(pooled.timings)
    atomic_write_text(
        run.root / "timings.json",
        json.dumps({**outcome.timings, **{d: f.timings for d, f in outcome.folds.items()}}, indent=2) + "\n",
    )
    return outcome
