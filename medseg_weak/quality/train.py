"""``fit_quality``: train the quality model into a folder with a Lightning Trainer, resumably.

The stage bookkeeping (skip a finished stage, refuse another config) belongs to the stage runner;
this is the part under it: loaders, the module, the Trainer with the project's checkpoint / logger
callbacks, resume from ``last.ckpt``, the best checkpoint's test metrics and predictions.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import lightning as L
from torch.utils.data import DataLoader

from medseg_weak.config import QualityConfig, to_dict
from medseg_weak.data.cache import ArrayCache
from medseg_weak.data.datamodule import EpochSeededSampler
from medseg_weak.data.manifest import Manifest
from medseg_weak.errors import InputError
from medseg_weak.io_utils import atomic_write_text
from medseg_weak.quality.data import QualityDataset
from medseg_weak.quality.model import load_encoder_weights
from medseg_weak.quality.module import QualityModule
from medseg_weak.quality.predict import write_predictions_csv
from medseg_weak.stage_trainer import fit_resumable, stage_trainer

log = logging.getLogger(__name__)


def fit_quality(
    cfg: QualityConfig,
    train: Manifest,
    val: Manifest,
    out_dir: str | Path,
    image_size: int,
    test: Manifest | None = None,
    cache_dir: str | Path | None = None,
    seed: int = 0,
    num_workers: int = 0,
    progress: bool = True,
    callbacks: list[L.Callback] | None = None,
    info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Fit on ``train`` (selecting on ``val``), test the best checkpoint on ``test``; returns and writes
    ``out_dir/metrics.json`` (and ``predictions.csv`` for the test images).

    ``info``: more entries for metrics.json (e.g. the held-out camera).
    ``train`` / ``val`` / ``test`` are manifests of those images (e.g. ``manifest.subset(...)`` of one
    split); their labels are the grades in class-index order. Restarted after an interruption with
    the same arguments, training continues from ``out_dir/last.ckpt``.
    """
    out = Path(out_dir)
    for name, part in (("train", train), ("val", val)):
        if len(part) == 0:
            raise InputError(part.source, f"no {name} images for the quality model")
    labels = list(train.labels)
    domains = sorted({r.domain for part in (train, val, test) if part is not None for r in part.records})
    L.seed_everything(seed, workers=True, verbose=False)
    cache = ArrayCache(cache_dir) if cache_dir else None

    def dataset(part: Manifest) -> QualityDataset:
        return QualityDataset(part, image_size, cache, domains, cfg.mask_target)

    train_set = dataset(train)
    loaders = (
        DataLoader(
            train_set,
            cfg.batch_size,
            sampler=EpochSeededSampler(len(train_set), seed),
            num_workers=num_workers,
            drop_last=len(train_set) > cfg.batch_size,  # no 1-image BatchNorm batch at an epoch's end
        ),
        DataLoader(dataset(val), cfg.batch_size, num_workers=num_workers),
    )
    module = QualityModule.from_config(cfg, labels, domains, image_size, seed)
    if cfg.weights:
        load_encoder_weights(module.model, cfg.weights)
    else:
        log.info("quality encoder '%s' starts from random weights (no quality.weights)", cfg.encoder)
    trainer = make_trainer(cfg, out, progress)
    trainer.callbacks.extend(callbacks or [])
    train_loader, val_loader = loaders
    fitted = fit_resumable(trainer, module, out, train_dataloaders=train_loader, val_dataloaders=val_loader)
    best = fitted.best
    metrics: dict[str, Any] = {
        "best_checkpoint": best.name,
        "monitor": cfg.monitor,
        "best_score": fitted.score,
        "resumed_from_epoch": fitted.resumed_from_epoch,
        "labels": labels,
        "domains": domains,
        "mask_channels": list(module.mask_names) if module.train_masks else [],
        "config": to_dict(cfg),
        **(info or {}),
    }
    if test is not None and len(test) > 0:
        test_set = dataset(test)
        loader = DataLoader(test_set, cfg.batch_size, num_workers=num_workers)
        trainer.test(module, loader, ckpt_path=str(best), verbose=False)
        metrics["test"] = module.test_results
        rows = sorted(module.test_predictions, key=lambda p: p["index"])
        write_predictions_csv(
            out / "predictions.csv",
            [test_set.records[p["index"]] for p in rows],
            labels,
            [p["probs"] for p in rows],
        )
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics


def make_trainer(cfg: QualityConfig, out: Path, progress: bool = True) -> L.Trainer:
    # CUDA has no deterministic bilinear-upsampling backward: warn, not fail.
    return stage_trainer(out, cfg, progress, deterministic="warn")
