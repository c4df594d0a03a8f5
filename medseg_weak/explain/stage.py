"""The CAM stage: optional selection of method/layer/threshold, generation, quality tables.

Lifecycle (skip, resume, refuse, upstream digests) is the runner's (``medseg_weak.stages``);
generation itself resumes image by image and runs on Lightning's strategy (``explain.generate``), and
``shard`` lets several scheduler tasks share one folder: the stage completes when the last image is
written.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medseg_weak.config import CamConfig, Config
from medseg_weak.errors import ConfigError
from medseg_weak.stages import DataSummary, Stage, StageContext, StageResult, files_digest, stage_config
from medseg_weak.tables import Table

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CamsResult(StageResult):
    images: int
    degenerate: int

    @property
    def index(self) -> Path:
        return self.folder / "index.csv"

    def rows(self) -> list[dict[str, Any]]:
        with open(self.index, newline="") as f:
            return list(csv.DictReader(f))

    def summary(self) -> dict[str, Any]:
        return {"images": self.images, "degenerate": self.degenerate}

    def key_files(self) -> list[Path]:
        return [self.index]


def check_cams(cfg: Config, data: DataSummary, check_layer: bool = True) -> None:
    """``cams.*`` names (method, threshold, refiner, target, layer) checked without computing a CAM."""
    from medseg_weak.explain.cam_methods import CAM_METHODS
    from medseg_weak.explain.masks import check_rule

    c = cfg.cams
    try:
        CAM_METHODS.get(c.method)
    except ConfigError as err:
        raise ConfigError(f"'cams.method': {err}") from None
    check_rule(c.mask)
    labels = cfg.classifier.classes or data.labels
    if c.target not in ("predicted", *labels):
        raise ConfigError(f"'cams.target' is '{c.target}'; valid: predicted or a class: {', '.join(labels)}")
    if check_layer:
        from medseg_weak.classify.model import Classifier

        model = Classifier.create(
            cfg.classifier.backbone, cfg.classifier.in_channels or 1, max(2, len(labels))
        )
        if c.layer not in model.cam_layers():
            raise ConfigError(f"'cams.layer' is '{c.layer}'; valid: {', '.join(model.cam_layers())}")


class CamsStage(Stage):
    """CAMs, pseudo-masks and overlays of every image into ``<run>/cams/``.

    ``checkpoint``: explain this classifier instead of the run's own (then the stage needs nothing
    upstream and the checkpoint's content is part of the fingerprint)."""

    name = "cams"

    def __init__(
        self,
        checkpoint: Path | None = None,
        evaluate: bool = False,
        select: bool = False,
        shard: str | None = None,
    ) -> None:
        from medseg_weak.explain.generate import Shard

        self.checkpoint = Path(checkpoint) if checkpoint else None
        self.evaluate = evaluate
        self.select = select
        self.shard = Shard.parse(shard)
        self.needs = () if self.checkpoint else ("classifier",)

    def fingerprint(self, cfg: Config) -> dict[str, Any]:
        relevant = {**stage_config(cfg, "cams", "data"), "select": self.select, "evaluate": self.evaluate}
        relevant.pop("seed")  # CAMs are a deterministic function of the classifier and the images
        if cfg.classifier.test_bn != "training":  # (absent when default: earlier runs' CAMs stay valid)
            relevant["classifier_test_bn"] = cfg.classifier.test_bn  # the statistics CAMs normalise with
        for key in CamConfig.PLACEMENT:  # where the loop runs; the files are the same bytes anywhere
            relevant["cams"].pop(key)
        if self.checkpoint is not None:
            relevant["classifier_sha256"] = files_digest([self.checkpoint])
        return relevant

    def validate(self, cfg: Config, data: DataSummary) -> None:
        from medseg_weak.errors import InputError

        if self.checkpoint is not None and not self.checkpoint.is_file():
            raise InputError(self.checkpoint, "classifier checkpoint not found (--checkpoint)")
        # An external checkpoint's architecture may differ from cfg.classifier: its layer is checked at run.
        check_cams(cfg, data, check_layer=self.checkpoint is None)

    def run(self, ctx: StageContext) -> CamsResult:
        from medseg_weak.explain.generate import generate_cams
        from medseg_weak.explain.select import select_cam_config
        from medseg_weak.progress import progress_bar

        cfg, out, manifest = ctx.cfg, ctx.out, ctx.manifest
        checkpoint = self.checkpoint or ctx.best_checkpoint("classifier")
        if self.select:
            cfg = dataclasses.replace(cfg, cams=select_cam_config(cfg, manifest, checkpoint, out))
        with progress_bar(len(manifest), "CAMs", enabled=ctx.progress) as advance:
            rows = generate_cams(
                cfg, manifest, out, checkpoint, self.shard, evaluate=self.evaluate, progress=advance
            )
        degenerate = sum(str(r["degenerate"]) in ("True", "true", "1") for r in rows)
        if degenerate:
            log.warning(
                "%d of %d CAMs were degenerate (all zero or constant in the breast): empty masks",
                degenerate,
                len(rows),
            )
        complete = len(rows) == len(manifest)
        if self.evaluate and complete:
            write_quality_tables(rows, out)
        return CamsResult(out, len(rows), degenerate, complete=complete)

    def load(self, ctx: StageContext) -> CamsResult:
        state = ctx.state(self.name)
        return CamsResult(ctx.out, int(state.get("images", 0)), int(state.get("degenerate", 0)))


def write_quality_tables(rows: list[dict[str, Any]], out: Path) -> None:
    """Pseudo-mask quality against the truth, per hospital and per class (mean ± SE over images)."""
    metrics = ("dice", "iou", "pointing", "relevance_mass")
    scored = [r for r in rows if r.get("dice") not in ("", None)]
    if not scored:
        log.warning("--evaluate: no image has a ground-truth mask; no quality table written")
        return
    for by, title in (("domain", "hospital"), ("label", "class")):
        groups = sorted({r[by] for r in scored})
        values = [
            (group, m, float(r[m]))
            for group in [*groups, "all"]
            for r in scored
            if group in ("all", r[by])
            for m in metrics
            if r.get(m) not in ("", None)
        ]
        table = Table.from_values(f"pseudo-mask vs truth by {title}", values, average_column=None)
        table.write(out, f"quality_by_{title}", plot=title == "hospital")
