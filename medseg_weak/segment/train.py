"""The segmenter's training pieces: its datasets (pseudo-masks, truth or self-training targets), its
Lightning Trainer, and the self-training relabelling. The stage that uses them is ``segment.stage``."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import lightning as L
import numpy as np
import torch
from PIL import Image as PILImage

from medseg_weak.config import Config, SegmenterConfig
from medseg_weak.data.dataset import PreprocessedDataset
from medseg_weak.data.manifest import Manifest
from medseg_weak.data.prepare import open_cache
from medseg_weak.errors import ConfigError, InputError
from medseg_weak.io_utils import atomic_write_bytes
from medseg_weak.rundir import RunDir
from medseg_weak.segment.data import SegmentationDataset, Source
from medseg_weak.segment.module import SegmenterModule, self_train_targets
from medseg_weak.stage_trainer import stage_trainer

log = logging.getLogger(__name__)


def check_weak_label_classes(
    seg: SegmenterConfig, labels: tuple[str, ...] | list[str], source: object
) -> None:
    """``pseudo_mask_classes`` and ``size_prior`` may only name the data's labels."""
    for name in ("pseudo_mask_classes", "size_prior"):
        unknown = sorted(set(getattr(seg, name)) - set(labels))
        if unknown:
            raise ConfigError(
                f"'segmenter.{name}' has {', '.join(unknown)}, not a label of {source}; "
                f"valid: {', '.join(labels)}"
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
    check_weak_label_classes(seg, manifest.labels, manifest.source)
    weak = source != "truth" and split != "test"
    cache = open_cache(cfg, run)
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


def make_trainer(seg: SegmenterConfig, out: Path, progress: bool = True) -> L.Trainer:
    # CUDA has no deterministic bilinear-upsampling backward (FPN, DeepLabV3+ decoders): warn, not fail.
    return stage_trainer(out, seg, progress, deterministic="warn")


@torch.no_grad()
def write_self_training_targets(
    cfg: Config, manifest: Manifest, run: RunDir, previous: Path, out: Path
) -> None:
    """Relabel train and val images: the ``previous`` round's confident pixels merged with the CAM masks."""
    model = SegmenterModule.load_from_checkpoint(previous, map_location="cpu", weights_only=False).eval()
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
