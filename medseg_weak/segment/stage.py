"""The segmenter stages: a UNet on the CAM pseudo-masks (``segmenter``), its self-training rounds
(``segmenter_self<r>``) and the same network on the ground truth (``oracle``).

Lifecycle (skip, resume, refuse, upstream digests: new CAMs retrain the segmenter) is the runner's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
from torch.utils.data import DataLoader

from medseg_weak.config import Config, to_dict
from medseg_weak.errors import ConfigError, InputError
from medseg_weak.io_utils import atomic_write_text
from medseg_weak.segment.data import Source
from medseg_weak.segment.train import make_trainer, split_dataset, write_self_training_targets
from medseg_weak.stage_trainer import fit_resumable
from medseg_weak.stages import DataSummary, Stage, StageContext, StageResult, stage_config

STAGES: dict[str, str] = {"cams": "segmenter", "truth": "oracle"}


def self_training_stage(round_: int) -> str:
    return f"segmenter_self{round_}"


@dataclass(frozen=True)
class SegmenterResult(StageResult):
    best_checkpoint: Path
    monitor: str
    best_score: float | None
    source: str
    resumed_from_epoch: int | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "best_checkpoint": self.best_checkpoint.name,
            "best_score": self.best_score,
            "resumed_from_epoch": self.resumed_from_epoch,
        }

    def key_files(self) -> list[Path]:
        return [self.best_checkpoint]

    def load_model(self) -> Any:
        """The trained ``SegmenterModule`` in eval mode, on the CPU."""
        from medseg_weak.segment.module import SegmenterModule

        return SegmenterModule.load_from_checkpoint(
            self.best_checkpoint, map_location="cpu", weights_only=False
        ).eval()


def check_segmenter(cfg: Config, data: DataSummary) -> None:
    """Architecture, encoder, loss, weights file and label names, checked without training."""
    from medseg_weak.segment.losses import LOSSES
    from medseg_weak.segment.module import create_segmenter
    from medseg_weak.segment.train import check_weak_label_classes

    seg = cfg.segmenter
    try:
        LOSSES.get(seg.loss)
    except ConfigError as err:
        raise ConfigError(f"'segmenter.loss': {err}") from None
    create_segmenter(seg, load_encoder_weights=False)
    if seg.encoder_weights_path and not Path(seg.encoder_weights_path).is_file():
        raise InputError(
            seg.encoder_weights_path, "encoder weights file not found ('segmenter.encoder_weights_path')"
        )
    check_weak_label_classes(seg, data.labels, data.source)


class SegmenterStage(Stage):
    """Round 0 trains on CAM pseudo-masks (``source="cams"``) or the truth (``"truth"``); round r >= 1
    (``"self"``) on the targets derived from round r - 1's confident predictions merged with the CAM
    masks."""

    def __init__(self, source: Source = "cams", round_: int = 0) -> None:
        if (source == "self") != (round_ >= 1):
            raise ValueError("self-training stages have round >= 1, and only they")
        self.source = source
        self.round = round_
        self.name = self_training_stage(round_) if source == "self" else STAGES[source]
        previous = STAGES["cams"] if round_ == 1 else self_training_stage(round_ - 1)
        self.needs = {"cams": ("cams",), "truth": (), "self": ("cams", previous)}[source]
        self.previous = previous if source == "self" else None

    def fingerprint(self, cfg: Config) -> dict[str, Any]:
        relevant = stage_config(cfg, "data", "segmenter")
        # How many rounds follow does not change this round; the confidence only matters from round 1.
        relevant["segmenter"].pop("self_training_rounds")
        if self.source != "self":
            relevant["segmenter"].pop("confidence")
        if self.source == "truth":  # the oracle trains on every image's real mask, without priors
            for name in ("pseudo_mask_classes", "size_prior", "size_weight"):
                relevant["segmenter"].pop(name)
        relevant["source"] = self.source
        return relevant

    def validate(self, cfg: Config, data: DataSummary) -> None:
        check_segmenter(cfg, data)
        if self.source == "truth" and not data.has_truth:
            raise InputError(
                data.source, "the oracle segmenter needs a ground-truth mask (mask_path) per image"
            )

    def run(self, ctx: StageContext) -> SegmenterResult:
        from medseg_weak.data.datamodule import EpochSeededSampler
        from medseg_weak.segment.module import SegmenterModule

        cfg, out, manifest = ctx.cfg, ctx.out, ctx.manifest
        seg = cfg.segmenter
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        targets_dir = out / "targets" if self.source == "self" else None
        if self.previous is not None and targets_dir is not None:
            previous = ctx.best_checkpoint(self.previous)
            write_self_training_targets(cfg, manifest, ctx.run, previous, targets_dir)
        train = split_dataset(cfg, manifest, ctx.run, "train", self.source, targets_dir)
        val = split_dataset(cfg, manifest, ctx.run, "val", self.source, targets_dir)
        loaders = {
            "train_dataloaders": DataLoader(
                train,
                seg.batch_size,
                sampler=EpochSeededSampler(len(train), cfg.seed),
                num_workers=cfg.data.num_workers,
            ),
            "val_dataloaders": DataLoader(val, seg.batch_size, num_workers=cfg.data.num_workers),
        }
        module = SegmenterModule.from_config(seg)
        trainer = make_trainer(seg, out, ctx.progress)
        fitted = fit_resumable(trainer, module, out, **loaders)
        best, score = fitted.best, fitted.score
        metrics = {
            "best_checkpoint": best.name,
            "monitor": seg.monitor,
            "best_score": score,
            "resumed_from_epoch": fitted.resumed_from_epoch,  # None: trained from the start
            "source": self.source,
            "config": to_dict(seg),
        }
        atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        return SegmenterResult(out, best, seg.monitor, score, self.source, fitted.resumed_from_epoch)

    def load(self, ctx: StageContext) -> SegmenterResult:
        metrics = json.loads((ctx.out / "metrics.json").read_text())
        best = ctx.best_checkpoint(self.name)
        resumed = metrics.get("resumed_from_epoch")
        return SegmenterResult(ctx.out, best, metrics["monitor"], metrics["best_score"], self.source, resumed)


def segmenter_stages(cfg: Config) -> list[SegmenterStage]:
    """The CAM-trained segmenter and its ``segmenter.self_training_rounds`` rounds."""
    rounds = cfg.segmenter.self_training_rounds
    return [SegmenterStage("cams"), *(SegmenterStage("self", r) for r in range(1, rounds + 1))]
