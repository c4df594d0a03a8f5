"""Train a segmenter into ``<run>/<stage>/`` on pseudo-masks (``segmenter``) or the truth (``oracle``).

Same conventions as the classifier stage: best and last checkpoints, CSV and TensorBoard logs, resume from
``last.ckpt``, skip when complete, refuse a folder made by another config.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from PIL import Image as PILImage
from torch.utils.data import DataLoader

from medseg_weak.config import Config, SegmenterConfig, to_dict
from medseg_weak.data.cache import ArrayCache, file_digest
from medseg_weak.data.datamodule import EpochSeededSampler
from medseg_weak.data.dataset import PreprocessedDataset
from medseg_weak.data.manifest import Manifest
from medseg_weak.errors import ConfigError, InputError
from medseg_weak.io_utils import atomic_write_bytes, atomic_write_text
from medseg_weak.rundir import RunDir, stage_config
from medseg_weak.segment.data import SegmentationDataset, Source
from medseg_weak.segment.module import SegmenterModule, self_train_targets
from medseg_weak.stage_trainer import quiet_lightning, stage_callbacks, stage_loggers

log = logging.getLogger(__name__)
STAGES: dict[Source, str] = {"cams": "segmenter", "truth": "oracle"}


def self_training_stage(round_: int) -> str:
    return f"segmenter_self{round_}"


def check_weak_label_classes(seg: SegmenterConfig, manifest: Manifest) -> None:
    """``pseudo_mask_classes`` and ``size_prior`` may only name the manifest's labels."""
    for name in ("pseudo_mask_classes", "size_prior"):
        unknown = sorted(set(getattr(seg, name)) - set(manifest.labels))
        if unknown:
            raise ConfigError(
                f"'segmenter.{name}' has {', '.join(unknown)}, not a label of {manifest.source}; "
                f"valid: {', '.join(manifest.labels)}"
            )


def split_dataset(
    cfg: Config, manifest: Manifest, run: RunDir, split: str, source: Source, targets_dir: Path | None = None
) -> SegmentationDataset:
    """The ``split`` images with ``source`` targets. Training splits of pseudo-mask sources apply
    ``segmenter.pseudo_mask_classes`` and ``segmenter.size_prior``; test images and the truth never."""
    records = [r for r in manifest.records if r.split == split]
    if not records:
        raise InputError(manifest.source, f"no '{split}' images to train the segmenter on")
    seg = cfg.segmenter
    check_weak_label_classes(seg, manifest)
    weak = source != "truth" and split != "test"
    cache = ArrayCache(cfg.data.cache_dir or run.root / "cache")
    base = PreprocessedDataset(
        manifest.subset(records), cfg.data.kind, cfg.data.image_size, cache, manifest.domains
    )
    return SegmentationDataset(
        base,
        source,
        run.stage("cams"),
        targets_dir,
        trusted_classes=seg.pseudo_mask_classes if weak else (),
        size_prior=seg.size_prior if weak else None,
    )


def train_segmenter(
    cfg: Config,
    manifest: Manifest,
    run: RunDir,
    source: Source = "cams",
    force: bool = False,
    progress: bool = True,
    round_: int = 0,
) -> dict[str, Any]:
    """Round 0 trains on CAM pseudo-masks ("cams") or the truth; round r >= 1 ("self") on the targets
    derived from round r - 1's confident predictions merged with the CAM masks."""
    stage = self_training_stage(round_) if source == "self" else STAGES[source]
    targets_dir = run.stage(stage) / "targets" if source == "self" else None
    relevant = stage_config(cfg, "data", "segmenter")
    # How many rounds follow does not change this round; the confidence only matters from round 1.
    relevant["segmenter"].pop("self_training_rounds")
    if source != "self":
        relevant["segmenter"].pop("confidence")
    if source == "truth":  # the oracle trains on every image's real mask, without priors
        for name in ("pseudo_mask_classes", "size_prior", "size_weight"):
            relevant["segmenter"].pop(name)
    relevant["source"] = source
    if source != "truth":  # new pseudo-masks invalidate the segmenters trained on the old ones
        index = run.stage("cams") / "index.csv"
        if not index.is_file():
            hint = f"run `medseg-weak cams --run {run.root}` first"
            raise InputError(index, f"no CAM pseudo-masks in this run; {hint}")
        relevant["cams_index_sha256"] = file_digest(index)
    out = run.stage(stage)
    if run.begin_stage(stage, relevant, force=force):
        return json.loads((out / "metrics.json").read_text())
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    seg = cfg.segmenter
    if source == "self":
        write_self_training_targets(cfg, manifest, run, round_, targets_dir)
    train = split_dataset(cfg, manifest, run, "train", source, targets_dir)
    val = split_dataset(cfg, manifest, run, "val", source, targets_dir)
    loaders = (
        DataLoader(
            train,
            seg.batch_size,
            sampler=EpochSeededSampler(len(train), cfg.seed),
            num_workers=cfg.data.num_workers,
        ),
        DataLoader(val, seg.batch_size, num_workers=cfg.data.num_workers),
    )
    module = SegmenterModule.from_config(seg)
    trainer = make_trainer(seg, out, progress)
    checkpoint = trainer.checkpoint_callback
    last = out / "last.ckpt"
    trainer.fit(module, *loaders, ckpt_path=str(last) if last.is_file() else None)
    best = Path(checkpoint.best_model_path) if checkpoint.best_model_path else last
    metrics = {
        "best_checkpoint": best.name,
        "monitor": seg.monitor,
        "best_score": float(checkpoint.best_model_score) if checkpoint.best_model_score is not None else None,
        "source": source,
        "config": to_dict(seg),
    }
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    run.complete_stage(stage, relevant, best_checkpoint=best.name)
    return metrics


def make_trainer(seg: SegmenterConfig, out: Path, progress: bool = True) -> L.Trainer:
    """The segmenter's Trainer: best (on ``seg.monitor``) and last checkpoints in ``out``, optional early
    stopping, CSV and TensorBoard logs."""
    quiet_lightning()
    return L.Trainer(
        default_root_dir=out,
        max_epochs=seg.epochs,
        accelerator=seg.accelerator,
        devices="auto",
        precision=seg.precision,
        # CUDA has no deterministic bilinear-upsampling backward (FPN, DeepLabV3+ decoders): warn, not fail.
        deterministic="warn",
        callbacks=stage_callbacks(out, seg.monitor, seg.monitor_mode, seg.patience),
        logger=stage_loggers(out),
        log_every_n_steps=1,
        enable_progress_bar=progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )


def previous_checkpoint(run: RunDir, round_: int) -> Path:
    stage = STAGES["cams"] if round_ == 1 else self_training_stage(round_ - 1)
    return run.stage(stage) / "best.ckpt"


@torch.no_grad()
def write_self_training_targets(cfg: Config, manifest: Manifest, run: RunDir, round_: int, out: Path) -> None:
    """Relabel train and val images: the previous round's confident pixels merged with the CAM masks."""
    model = SegmenterModule.load_from_checkpoint(
        previous_checkpoint(run, round_), map_location="cpu", weights_only=False
    ).eval()
    for split in ("train", "val"):
        data = split_dataset(cfg, manifest, run, split, "cams")
        for i in range(len(data)):
            item = data[i]
            probs = torch.sigmoid(model(item["image"][None]))[:, 0]
            target = self_train_targets(probs, item["target"][None], cfg.segmenter.confidence)[0]
            target[~item["region"]] = 0  # outside the breast stays background
            buf = io.BytesIO()
            PILImage.fromarray(target.numpy().astype(np.uint8)).save(buf, format="PNG")
            atomic_write_bytes(out / f"{data.base.records[i].id}.png", buf.getvalue())


def train_all_segmenters(
    cfg: Config, manifest: Manifest, run: RunDir, force: bool = False, progress: bool = True
) -> dict[str, Any]:
    """The CAM-trained segmenter and its self-training rounds (``segmenter.self_training_rounds``)."""
    metrics = train_segmenter(cfg, manifest, run, "cams", force=force, progress=progress)
    for round_ in range(1, cfg.segmenter.self_training_rounds + 1):
        metrics = train_segmenter(cfg, manifest, run, "self", force=force, progress=progress, round_=round_)
    return metrics
