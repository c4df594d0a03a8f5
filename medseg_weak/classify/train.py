"""The classifier's training pieces: its data module, its Lightning Trainer, its predictions file.

The stage that uses them is ``medseg_weak.classify.stage``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L

from medseg_weak.classify.module import ClassifierModule
from medseg_weak.config import Config
from medseg_weak.core.predict_loop import parse_devices
from medseg_weak.data.datamodule import HospitalDataModule
from medseg_weak.data.manifest import Manifest
from medseg_weak.data.prepare import cache_dir
from medseg_weak.io_utils import atomic_write_text
from medseg_weak.rundir import RunDir
from medseg_weak.stage_trainer import stage_trainer

log = logging.getLogger(__name__)


def make_datamodule(cfg: Config, manifest: Manifest, run: RunDir) -> HospitalDataModule:
    return HospitalDataModule(
        manifest,
        cfg.data.kind,
        cfg.data.image_size,
        cfg.classifier.batch_size,
        cache_dir=cache_dir(cfg, run),
        num_workers=cfg.data.num_workers,
        seed=cfg.seed,
    )


def make_trainer(cfg: Config, out: Path, progress: bool = True) -> L.Trainer:
    c = cfg.classifier
    devices = parse_devices(c.devices)
    return stage_trainer(out, c, progress, devices=devices, strategy=c.strategy, deterministic=True)


def write_predictions(
    module: ClassifierModule, data: HospitalDataModule, manifest: Manifest, path: Path
) -> None:
    test = data.split("test")
    header = ["id", "domain", "label", "predicted", *[f"p_{label}" for label in manifest.labels]]
    rows = [",".join(header)]
    for p in sorted(module.test_predictions, key=lambda p: p["index"]):
        record = test.records[p["index"]]
        predicted = manifest.labels[max(range(len(p["probs"])), key=p["probs"].__getitem__)]
        rows.append(
            ",".join([record.id, record.domain, record.label, predicted, *(f"{v:.5f}" for v in p["probs"])])
        )
    atomic_write_text(path, "\n".join(rows) + "\n")
