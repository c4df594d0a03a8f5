"""The classifier's training pieces: its data module, its Lightning Trainer, its predictions file.

The stage that uses them is ``medseg_weak.classify.stage``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L

from medseg_weak.classify.module import ClassifierModule
from medseg_weak.config import Config
from medseg_weak.data.datamodule import HospitalDataModule
from medseg_weak.data.manifest import Manifest
from medseg_weak.data.prepare import cache_dir
from medseg_weak.io_utils import atomic_write_text
from medseg_weak.rundir import RunDir
from medseg_weak.stage_trainer import AtomicCheckpointIO, quiet_lightning, stage_callbacks, stage_loggers

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
    quiet_lightning()
    c = cfg.classifier
    callbacks = stage_callbacks(out, c.monitor, c.monitor_mode, c.patience)
    devices: int | str = int(c.devices) if c.devices.isdigit() else c.devices
    return L.Trainer(
        default_root_dir=out,
        plugins=[AtomicCheckpointIO()],
        max_epochs=c.epochs,
        accelerator=c.accelerator,
        devices=devices,
        strategy=c.strategy,
        precision=c.precision,
        deterministic=True,
        callbacks=callbacks,
        logger=stage_loggers(out),
        log_every_n_steps=1,  # surgery diagnostics are logged every N steps by the module itself
        enable_progress_bar=progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )


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
