"""The Stage protocol and the one runner that runs every stage the same way.

A stage (classifier, cams, segmenter, oracle, eval, ...) is one object: a name, the stages it
needs, ``fingerprint(cfg)`` (the part of the config its outputs depend on), a cheap
``validate(cfg, data)``, ``run(ctx)`` and ``load(ctx)`` (its typed result, read back from its folder).
Everything the stages share lives in :class:`Runner`, written once:

- every stage of a plan is validated before the first one starts, so a typo anywhere in the config
  fails in seconds, before any training;
- provenance (config.yaml, env.json) and one data resolution per run;
- a complete stage whose fingerprint matches is skipped (its result loaded back); an incomplete one
  resumes (each stage resumes its own work: Lightning from last.ckpt, CAMs from their meta files); a
  folder made by another config is refused unless ``force``;
- upstream outputs are part of a stage's fingerprint: the runner records a digest of each finished
  stage's key files in its stage.json and adds the digests of the stages it needs, so new CAMs
  invalidate the segmenter trained on the old ones without any stage hashing files itself;
- per-stage timings in ``timings.json``, and the best checkpoint read from stage.json
  (:meth:`StageContext.best_checkpoint`), never a hard-coded file name.

This module is framework, not a stage: it imports no stage package (stage packages import it), so
the layer order data < classify < explain < segment < evaluate holds with the protocol below them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medseg_weak.config import Config, to_dict
from medseg_weak.errors import ConfigError, InputError
from medseg_weak.io_utils import atomic_write_text
from medseg_weak.rundir import RunDir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataSummary:
    """What validation may know about the data without decoding an image: labels, hospitals, masks.

    For the built-in benchmark it is derived from the config (nothing is generated yet); for a
    manifest it is read from the CSV."""

    source: str
    labels: tuple[str, ...]
    domains: tuple[str, ...]
    has_truth: bool


@dataclass(frozen=True)
class StageResult:
    """What a stage produced. Subclasses add typed fields; ``summary`` goes into stage.json."""

    folder: Path
    complete: bool = field(default=True, kw_only=True)  # False: e.g. one shard of several finished

    def summary(self) -> dict[str, Any]:
        return {}

    def key_files(self) -> list[Path]:
        """The files downstream stages depend on; their digest is part of those stages' fingerprints."""
        return []


@dataclass(frozen=True)
class TrainedModelResult(StageResult):
    """A stage that trains a model (classifier, quality model): its best checkpoint and metrics.json."""

    best_checkpoint: Path
    metrics: dict[str, Any] = field(
        default_factory=dict
    )  # metrics.json: test metrics, overall and per domain

    def summary(self) -> dict[str, Any]:
        keys = ("best_score", "resumed_from_epoch")
        return {"best_checkpoint": self.best_checkpoint.name, **{k: self.metrics.get(k) for k in keys}}

    def key_files(self) -> list[Path]:
        return [self.best_checkpoint]


@dataclass
class StageContext:
    """What a running stage sees: the config, the split manifest, its run directory and folder."""

    cfg: Config
    manifest: Any  # medseg_weak.data.manifest.Manifest (split); Any keeps this module import-light
    run: RunDir
    name: str
    progress: bool = True
    force: bool = False

    @property
    def out(self) -> Path:
        return self.run.stage(self.name)

    def state(self, stage: str) -> dict[str, Any]:
        """``stage``'s stage.json; InputError if it is missing, broken or the stage is unfinished."""
        state = self.run.read_state(stage)
        if state is None or not state.get("complete"):
            raise InputError(
                self.run.stage(stage),
                f"stage '{stage}' has not finished in this run; run it first (e.g. medseg-weak pipeline)",
            )
        return state

    def best_checkpoint(self, stage: str) -> Path:
        """The checkpoint ``stage`` recorded as its best (stage.json ``best_checkpoint``)."""
        state = self.state(stage)
        name = state.get("best_checkpoint")
        path = self.run.stage(stage) / str(name)
        if not name or not path.is_file():
            raise InputError(
                self.run.stage(stage) / "stage.json", f"names no existing best checkpoint ({name!r})"
            )
        return path


class Stage(ABC):
    """One step of the chain. Subclasses set ``name`` and ``needs`` and implement four methods."""

    name: str = ""
    needs: tuple[str, ...] = ()

    @abstractmethod
    def fingerprint(self, cfg: Config) -> dict[str, Any]:
        """The config subset (plain data) the stage's outputs depend on; upstream digests are added."""

    def validate(self, cfg: Config, data: DataSummary) -> None:  # noqa: B027 - optional hook
        """Raise ConfigError / InputError for anything wrong. Cheap: no training, no decoding."""

    @abstractmethod
    def run(self, ctx: StageContext) -> StageResult:
        """Do the work into ``ctx.out``; resume partial work found there."""

    @abstractmethod
    def load(self, ctx: StageContext) -> StageResult:
        """The result of a complete stage, read back from ``ctx.out`` and its stage.json."""


def stage_config(cfg: Config, *sections: str) -> dict[str, Any]:
    """The parts of the config a stage depends on (seed always), as plain data for stage.json."""
    full = to_dict(cfg)
    return {"seed": cfg.seed, **{s: full[s] for s in sections}}


def files_digest(paths: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for path in paths:
        h.update(path.name.encode())
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


class Runner:
    """Runs a plan of stages in one run directory (see the module docstring for what it owns)."""

    def __init__(
        self,
        cfg: Config,
        run: RunDir,
        *,
        force: bool = False,
        progress: bool = True,
        redo: Sequence[str] = (),
    ) -> None:
        self.cfg = cfg
        self.run = run
        self.force = force
        self.progress = progress
        self.redo = set(redo)  # stages to recompute even when complete (e.g. `evaluate` rescoring)
        self.timings: dict[str, float] = {}

    @staticmethod
    def validate(plan: Sequence[Stage], cfg: Config, data: DataSummary) -> None:
        names = [s.name for s in plan]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(f"the plan runs stage(s) {', '.join(duplicates)} twice")
        for stage in plan:
            stage.validate(cfg, data)

    def execute(self, plan: Sequence[Stage], manifest: Any) -> dict[str, StageResult]:
        """Run ``plan`` in order on the split ``manifest``; return {stage name: result}.

        Stops after a stage that did not complete (e.g. one shard of several): later stages need it.
        """
        results: dict[str, StageResult] = {}
        for i, stage in enumerate(plan, 1):
            log.info("stage %d/%d: %s (%s)", i, len(plan), stage.name, self.run.root)
            start = time.perf_counter()
            result, ran = self._run_one(stage, manifest)
            if ran:  # a skipped stage keeps the time it took when it ran
                self.timings[stage.name] = round(time.perf_counter() - start, 2)
            self.write_timings()  # after each stage: later ones (the report) and interrupted runs see it
            results[stage.name] = result
            if not result.complete:
                log.info("%s: partial (this process's share is done); later stages wait", stage.name)
                break
        self.write_timings()
        return results

    def write_timings(self) -> None:
        path = self.run.root / "timings.json"
        old = json.loads(path.read_text()) if path.is_file() else {}
        merged = {**(old if isinstance(old, dict) else {}), **self.timings}
        atomic_write_text(path, json.dumps(merged, indent=2) + "\n")

    def fingerprint(self, stage: Stage) -> dict[str, Any]:
        relevant = stage.fingerprint(self.cfg)
        upstream = {}
        for need in stage.needs:
            state = self.run.read_state(need)
            if state is None or not state.get("complete"):
                raise InputError(
                    self.run.stage(need),
                    f"stage '{stage.name}' needs '{need}', which has not finished in this run; "
                    "run it first (e.g. medseg-weak pipeline)",
                )
            upstream[need] = state.get("digest", "")
        if upstream:
            relevant = {**relevant, "upstream": upstream}
        return relevant

    def _run_one(self, stage: Stage, manifest: Any) -> tuple[StageResult, bool]:
        """The stage's result, and whether it ran (False: complete already, loaded back)."""
        ctx = StageContext(self.cfg, manifest, self.run, stage.name, self.progress, self.force)
        relevant = self.fingerprint(stage)
        force = self.force or stage.name in self.redo
        if self.run.begin_stage(stage.name, relevant, force=force, redo=stage.name in self.redo):
            log.info("%s: complete and matching the config; skipped", ctx.out)
            return stage.load(ctx), False
        result = stage.run(ctx)
        if result.complete:
            digest = files_digest(result.key_files())
            self.run.complete_stage(stage.name, relevant, digest=digest, **result.summary())
        return result, True
