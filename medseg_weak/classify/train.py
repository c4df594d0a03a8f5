"""Train one classifier into ``<run>/classifier/``: fit, select the best checkpoint, test, write metrics.

Resumable: a killed run restarted with the same command continues from ``last.ckpt``; a finished
stage with the same config is skipped.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import lightning as L

from medseg_weak.classify.module import ClassifierModule
from medseg_weak.config import Config
from medseg_weak.data.datamodule import HospitalDataModule, restrict_classes
from medseg_weak.data.manifest import Manifest
from medseg_weak.data.prepare import write_split_table
from medseg_weak.errors import ConfigError
from medseg_weak.io_utils import atomic_write_text
from medseg_weak.rundir import RunDir, stage_config
from medseg_weak.stage_trainer import quiet_lightning, stage_callbacks, stage_loggers

log = logging.getLogger(__name__)
STAGE = "classifier"


def classifier_stage_config(cfg: Config, test_domain: str) -> dict[str, Any]:
    relevant = stage_config(cfg, "data", "classifier")
    if not cfg.data.manifest:
        relevant["synth"] = stage_config(cfg, "synth")["synth"]
    relevant["data"]["test_domain"] = test_domain
    return relevant


def train_classifier(
    cfg: Config,
    manifest: Manifest,
    run: RunDir,
    stage: str = STAGE,
    force: bool = False,
    progress: bool = True,
    callbacks: list[L.Callback] | None = None,
) -> dict[str, Any]:
    """Fit on the split ``manifest``; return (and write) ``metrics.json``. Skips a finished stage."""
    relevant = classifier_stage_config(cfg, cfg.data.test_domain)
    out = run.stage(stage)
    if run.begin_stage(stage, relevant, force=force):
        log.info("%s: complete and matching the config; skipped", out)
        return json.loads((out / "metrics.json").read_text())
    manifest = restrict_classes(manifest, cfg.classifier.classes)
    write_split_table(manifest, out / "splits.csv")
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    data = make_datamodule(cfg, manifest, run)
    module = ClassifierModule.from_config(cfg.classifier, list(manifest.labels), manifest.domains, cfg.seed)
    if cfg.classifier.weights:
        from medseg_weak.classify.backbones import load_weights

        load_weights(module.model.backbone, cfg.classifier.weights)
    else:
        log.info(
            "classifier backbone '%s' starts from random weights (no classifier.weights)",
            cfg.classifier.backbone,
        )
    trainer = make_trainer(cfg, out, progress)
    trainer.callbacks.extend(callbacks or [])
    last = out / "last.ckpt"
    trainer.fit(module, datamodule=data, ckpt_path=str(last) if last.is_file() else None)
    checkpoint = trainer.checkpoint_callback
    best = Path(checkpoint.best_model_path) if checkpoint and checkpoint.best_model_path else last
    trainer.test(module, datamodule=data, ckpt_path=str(best), verbose=False)
    metrics = {
        "best_checkpoint": best.name,
        "monitor": cfg.classifier.monitor,
        "best_score": float(checkpoint.best_model_score)
        if checkpoint and checkpoint.best_model_score is not None
        else None,
        "labels": list(manifest.labels),
        "domains": manifest.domains,
        "test_domain": cfg.data.test_domain,
        "rule": cfg.classifier.surgery.rule,
        "test": module.test_results,
    }
    write_predictions(module, data, manifest, out / "predictions.csv")
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    run.complete_stage(stage, relevant, best_checkpoint=best.name)
    return metrics


def make_datamodule(cfg: Config, manifest: Manifest, run: RunDir) -> HospitalDataModule:
    return HospitalDataModule(
        manifest,
        cfg.data.kind,
        cfg.data.image_size,
        cfg.classifier.batch_size,
        cache_dir=cfg.data.cache_dir or run.root / "cache",
        num_workers=cfg.data.num_workers,
        seed=cfg.seed,
    )


def make_trainer(cfg: Config, out: Path, progress: bool = True) -> L.Trainer:
    quiet_lightning()
    c = cfg.classifier
    if not c.monitor.startswith("val/"):
        raise ConfigError(
            f"'classifier.monitor' must be a validation metric (e.g. val/kappa); got '{c.monitor}'"
        )
    if c.precision.startswith("16") and c.surgery.rule != "erm":
        # Surgery writes unscaled gradients, but the fp16 GradScaler would still unscale them.
        raise ConfigError(
            f"'classifier.precision' {c.precision} does not work with gradient surgery "
            f"(rule {c.surgery.rule}); use bf16-mixed or 32-true"
        )
    callbacks = stage_callbacks(out, c.monitor, c.monitor_mode, c.patience)
    devices: int | str = int(c.devices) if c.devices.isdigit() else c.devices
    return L.Trainer(
        default_root_dir=out,
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
