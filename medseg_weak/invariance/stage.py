"""The invariance stage: each layer's invariance to every configured transformation set, pooled and
per hospital / camera, and the CAM methods' equivariance, for the run's model (or a checkpoint) on
test images, into ``<run>/invariance/`` (files: :mod:`medseg_weak.invariance.outputs`)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medseg_weak.config import Config
from medseg_weak.errors import ConfigError, InputError, RegistryError
from medseg_weak.interpret.stage import model_stage, test_sample
from medseg_weak.stages import DataSummary, Stage, StageContext, StageResult, files_digest, stage_config

INVARIANCE = "invariance"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InvarianceStageResult(StageResult):
    summary_data: dict[str, Any] = field(default_factory=dict)  # summary.json

    def summary(self) -> dict[str, Any]:
        return {"cam_stays_put": self.summary_data.get("cam_stays_put")}

    def key_files(self) -> list[Path]:
        return [self.folder / "summary.json"]

    def overall(self) -> dict[str, float | None]:
        """{transformation set: mean over layers of the measure}."""
        return {k: v["overall"] for k, v in self.summary_data.get("transformations", {}).items()}


def transformation_sets(names: tuple[str, ...], steps: int, key: str = "invariance.transforms") -> list[Any]:
    """The named sets at their default ranges (``steps`` parameters each, 0: the set's default)."""
    from medseg_weak.invariance.transforms import TRANSFORMATION_SETS, make_transformation_set

    sets = []
    for name in names:
        try:
            TRANSFORMATION_SETS.get(name)
        except RegistryError as err:
            raise ConfigError(f"'{key}': {err}") from None
        sets.append(make_transformation_set(name, **({"steps": steps} if steps else {})))
    return sets


def check_invariance(cfg: Config) -> None:
    from medseg_weak.explain.cam_methods import CAM_METHODS
    from medseg_weak.invariance.measures import MEASURES

    transformation_sets(cfg.invariance.transforms, cfg.invariance.steps)
    for key, registry, names in (
        ("invariance.measure", MEASURES, (cfg.invariance.measure,)),
        ("invariance.cam_methods", CAM_METHODS, cfg.invariance.cam_methods),
    ):
        for name in names:
            try:
                registry.get(name)
            except RegistryError as err:
                raise ConfigError(f"'{key}': {err}") from None


def per_domain_groups(domains: tuple[str, ...]) -> list[str] | None:
    """The hospital of each image, when there are several and each has the 2 images a standard
    deviation over samples needs; else None (pooled only, with a logged note)."""
    counts = {d: domains.count(d) for d in set(domains)}
    if len(counts) < 2:
        return None
    small = sorted(d for d, c in counts.items() if c < 2)
    if small:
        log.warning("invariance: no per-hospital results (%s: fewer than 2 images); raise invariance.images",
                    ", ".join(small))  # fmt: skip
        return None
    return list(domains)


class InvarianceStage(Stage):
    """``checkpoint``: measure that model instead of the run's own (any kind ``predict`` knows);
    ``manifest``: its images (all of them) instead of the run's test split."""

    name = INVARIANCE

    def __init__(self, cfg: Config, checkpoint: Path | None = None, manifest: Path | None = None) -> None:
        self.checkpoint = checkpoint
        self.manifest = manifest
        self.model_stage = model_stage(cfg, cfg.invariance.model)
        self.needs = () if checkpoint else (self.model_stage,)

    def fingerprint(self, cfg: Config) -> dict[str, Any]:
        relevant = stage_config(cfg, "data", "invariance")
        given = [p for p in (self.checkpoint, self.manifest) if p is not None]
        if given:
            relevant["files"] = files_digest(given)
        return relevant

    def validate(self, cfg: Config, data: DataSummary) -> None:
        check_invariance(cfg)
        for path in (self.checkpoint, self.manifest):
            if path is not None and not path.is_file():
                raise InputError(path, "file not found")

    def run(self, ctx: StageContext) -> InvarianceStageResult:
        from medseg_weak.invariance.api import measure_invariances
        from medseg_weak.invariance.cam_equivariance import CamEquivarianceResult, cam_equivariance
        from medseg_weak.invariance.layers import default_layers
        from medseg_weak.invariance.outputs import write_invariance_outputs
        from medseg_weak.quality.predict import load_grader

        icfg = ctx.cfg.invariance
        grader = load_grader(self.checkpoint or ctx.best_checkpoint(self.model_stage))
        sample = test_sample(ctx, grader, icfg.images, self.manifest)
        model = grader.model.eval()
        layers = list(icfg.layers) or default_layers(model, sample.images)
        groups = per_domain_groups(sample.domains) if icfg.per_domain else None
        sets = transformation_sets(icfg.transforms, icfg.steps)
        results = {}
        for name, tset in zip(icfg.transforms, sets):
            measured = measure_invariances(
                model, sample.images, tset, layers, (icfg.measure,), icfg.batch_size, groups=groups,
                progress=ctx.progress,
            )  # fmt: skip
            results[name] = measured[icfg.measure]
        cams = None
        if icfg.cam_methods:
            per_set = [
                cam_equivariance(model, sample.images, tset, icfg.cam_methods, batch_size=icfg.batch_size)
                for tset in sets
            ]
            cams = CamEquivarianceResult([row for result in per_set for row in result.rows])
        settings = {
            "measure": icfg.measure,
            "layers": layers,
            "images": len(sample.ids),
            "model": str(self.checkpoint) if self.checkpoint else self.model_stage,
            "per_domain": groups is not None,
        }
        write_invariance_outputs(results, ctx.out, settings, cams)
        return self.load(ctx)

    def load(self, ctx: StageContext) -> InvarianceStageResult:
        path = ctx.out / "summary.json"
        if not path.is_file():
            raise InputError(ctx.out, "holds no summary.json; rerun the invariance stage")
        return InvarianceStageResult(ctx.out, summary_data=json.loads(path.read_text()))
