"""Train a segmenter into ``<run>/<stage>/`` on pseudo-masks (``segmenter``) or the truth (``oracle``).

Same conventions as the classifier stage: best and last checkpoints, CSV logs, resume from
``last.ckpt``, skip when complete, refuse a folder made by another config.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader

from medseg_weak.classify.train import quiet_lightning
from medseg_weak.config import Config, to_dict
from medseg_weak.data.cache import ArrayCache, file_digest
from medseg_weak.data.datamodule import EpochSeededSampler
from medseg_weak.data.dataset import PreprocessedDataset
from medseg_weak.data.manifest import Manifest
from medseg_weak.errors import InputError
from medseg_weak.io_utils import atomic_write_text
from medseg_weak.rundir import RunDir, stage_config
from medseg_weak.segment.data import SegmentationDataset, Source
from medseg_weak.segment.module import SegmenterModule

log = logging.getLogger(__name__)
STAGES: dict[Source, str] = {"cams": "segmenter", "truth": "oracle"}


def split_dataset(
    cfg: Config, manifest: Manifest, run: RunDir, split: str, source: Source
) -> SegmentationDataset:
    records = [r for r in manifest.records if r.split == split]
    if not records:
        raise InputError(manifest.source, f"no '{split}' images to train the segmenter on")
    cache = ArrayCache(cfg.data.cache_dir or run.root / "cache")
    base = PreprocessedDataset(
        manifest.subset(records), cfg.data.kind, cfg.data.image_size, cache, manifest.domains
    )
    return SegmentationDataset(base, source, run.stage("cams"))


def train_segmenter(
    cfg: Config,
    manifest: Manifest,
    run: RunDir,
    source: Source = "cams",
    force: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    stage = STAGES[source]
    relevant = stage_config(cfg, "data", "segmenter")
    relevant["source"] = source
    if source == "cams":  # new pseudo-masks invalidate the segmenter trained on the old ones
        relevant["cams_index_sha256"] = file_digest(run.stage("cams") / "index.csv")
    out = run.stage(stage)
    if run.begin_stage(stage, relevant, force=force):
        return json.loads((out / "metrics.json").read_text())
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    seg = cfg.segmenter
    train = split_dataset(cfg, manifest, run, "train", source)
    val = split_dataset(cfg, manifest, run, "val", source)
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
    quiet_lightning()
    checkpoint = ModelCheckpoint(
        dirpath=out,
        filename="best",
        monitor=seg.monitor,
        mode=seg.monitor_mode,
        save_last=True,
        enable_version_counter=False,
    )
    trainer = L.Trainer(
        default_root_dir=out,
        max_epochs=seg.epochs,
        accelerator="auto",
        devices="auto",
        deterministic=True,
        callbacks=[checkpoint],
        logger=CSVLogger(out, name="logs", version=""),
        log_every_n_steps=1,
        enable_progress_bar=progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
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
