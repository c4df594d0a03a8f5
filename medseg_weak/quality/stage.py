"""The quality stage: the fundus Good / Usable / Reject model (UNet encoder + grading head), trained
on the run's training cameras, selected on validation, tested on the test split (the held-out camera
with ``data.test_domain``); EyeQ metrics per camera in ``<run>/quality/metrics.json``.

Its lifecycle (skip, resume from last.ckpt, refuse another config) is the runner's."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medseg_weak.config import Config
from medseg_weak.errors import ConfigError, InputError
from medseg_weak.stages import DataSummary, Stage, StageContext, TrainedModelResult, stage_config

QUALITY = "quality"


@dataclass(frozen=True)
class QualityResult(TrainedModelResult):
    def load_model(self) -> Any:
        """The trained ``QualityModule`` in eval mode, on the CPU."""
        from medseg_weak.quality.module import QualityModule

        return QualityModule.load_from_checkpoint(
            self.best_checkpoint, map_location="cpu", weights_only=False
        ).eval()


def check_quality(cfg: Config, data: DataSummary) -> None:
    """Everything the quality model needs of ``quality`` and ``data``, checked without training."""
    from medseg_weak.data.kinds import get_kind
    from medseg_weak.quality.model import QualityNet

    kind = get_kind(cfg.data.kind)
    q = cfg.quality
    if q.in_channels != kind.channels:
        raise ConfigError(
            f"'quality.in_channels' is {q.in_channels}, but data.kind '{cfg.data.kind}' gives "
            f"{kind.channels}-channel images; set quality.in_channels={kind.channels}"
        )
    if len(data.labels) < 2:
        raise ConfigError(f"{data.source}: the quality model needs at least two grades; got {data.labels}")
    if cfg.data.test_domain and cfg.data.test_domain not in data.domains:
        raise ConfigError(
            f"'data.test_domain' is '{cfg.data.test_domain}', not a camera of {data.source}; "
            f"valid: {', '.join(data.domains)}"
        )
    if q.weights and not Path(q.weights).is_file():
        raise InputError(q.weights, "weights file not found ('quality.weights')")
    QualityNet(q, len(data.labels), 1)  # the encoder's name (lists close ones when unknown)


class QualityStage(Stage):
    name = QUALITY

    def fingerprint(self, cfg: Config) -> dict[str, Any]:
        relevant = stage_config(cfg, "data", "quality")
        if not cfg.data.manifest:
            relevant["synth"] = stage_config(cfg, "synth")["synth"]
        return relevant

    def validate(self, cfg: Config, data: DataSummary) -> None:
        check_quality(cfg, data)

    def run(self, ctx: StageContext) -> QualityResult:
        from medseg_weak.data.prepare import cache_dir, write_split_table
        from medseg_weak.quality.train import fit_quality

        cfg, manifest = ctx.cfg, ctx.manifest
        write_split_table(manifest, ctx.out / "splits.csv")
        part = {
            s: manifest.subset(r for r in manifest.records if r.split == s) for s in ("train", "val", "test")
        }
        metrics = fit_quality(
            cfg.quality,
            part["train"],
            part["val"],
            ctx.out,
            cfg.data.image_size,
            test=part["test"],
            cache_dir=cache_dir(cfg, ctx.run),
            seed=cfg.seed,
            num_workers=cfg.data.num_workers,
            progress=ctx.progress,
            info={"test_domain": cfg.data.test_domain},
        )
        return QualityResult(ctx.out, ctx.out / metrics["best_checkpoint"], metrics)

    def load(self, ctx: StageContext) -> QualityResult:
        metrics = json.loads((ctx.out / "metrics.json").read_text())
        return QualityResult(ctx.out, ctx.best_checkpoint(self.name), metrics)
