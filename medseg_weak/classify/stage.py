"""The classifier stage: fit on the training hospitals, test, write metrics and predictions.

Its lifecycle (skip, resume from last.ckpt, refuse another config, record the best checkpoint) is
the runner's (``medseg_weak.stages``); this file says only what is particular to the classifier.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L

from medseg_weak.classify.train import make_datamodule, make_trainer, write_predictions
from medseg_weak.config import Config
from medseg_weak.errors import ConfigError, InputError, RegistryError
from medseg_weak.io_utils import atomic_write_text
from medseg_weak.stage_trainer import fit_resumable
from medseg_weak.stages import DataSummary, Stage, StageContext, TrainedModelResult, stage_config

log = logging.getLogger(__name__)
METRICS = ("accuracy", "balanced_accuracy", "auroc", "f1", "kappa")  # scalar metrics, logged per split


@dataclass(frozen=True)
class ClassifierResult(TrainedModelResult):
    def load_model(self) -> Any:
        """The trained ``ClassifierModule`` in eval mode, on the CPU."""
        from medseg_weak.classify.module import ClassifierModule

        return ClassifierModule.load_from_checkpoint(
            self.best_checkpoint, map_location="cpu", weights_only=False
        ).eval()


def check_classifier(cfg: Config, data: DataSummary) -> None:
    """Everything about ``classifier`` and ``data`` the classifier needs, checked without training."""
    from medseg_weak.classify.model import Classifier
    from medseg_weak.classify.module import build_rule
    from medseg_weak.data.kinds import get_kind

    c = cfg.classifier
    get_kind(cfg.data.kind)
    try:
        build_rule(c.surgery)  # the rule's name (registry lists valid ones) and parameters
    except RegistryError as err:
        raise ConfigError(f"'classifier.surgery.rule': {err}") from None
    labels = list(c.classes or data.labels)
    unknown = sorted(set(c.classes) - set(data.labels))
    if unknown:
        raise ConfigError(
            f"'classifier.classes' has {', '.join(unknown)}, not a label of {data.source}; "
            f"valid: {', '.join(data.labels)}"
        )
    if cfg.data.test_domain and cfg.data.test_domain not in data.domains:
        raise ConfigError(
            f"'data.test_domain' is '{cfg.data.test_domain}', not a hospital of {data.source}; "
            f"valid: {', '.join(data.domains)}"
        )
    metric = c.monitor.split("/")[-1]
    where = c.monitor.split("/")[1:-1]
    if metric not in METRICS or (where and where[0] not in data.domains) or len(where) > 1:
        raise ConfigError(
            f"'classifier.monitor' is '{c.monitor}'; valid: val/<metric> or val/<hospital>/<metric> with "
            f"metric one of {', '.join(METRICS)}"
        )
    if c.weights and not Path(c.weights).is_file():
        raise InputError(c.weights, "weights file not found ('classifier.weights')")
    Classifier.create(c.backbone, c.in_channels or 1, max(2, len(labels)), c.dropout)  # the backbone's name


class ClassifierStage(Stage):
    """Train the classifier into ``<run>/<name>/`` (``classifier`` by default; the DG benchmark runs
    many under ``dg/<hospital>/<rule>/seed<k>``), with optional extra Lightning callbacks."""

    def __init__(self, name: str = "classifier", callbacks: tuple[L.Callback, ...] = ()) -> None:
        self.name = name
        self.callbacks = callbacks

    def fingerprint(self, cfg: Config) -> dict[str, Any]:
        relevant = stage_config(cfg, "data", "classifier")
        if not cfg.data.manifest:
            relevant["synth"] = stage_config(cfg, "synth")["synth"]
        return relevant

    def validate(self, cfg: Config, data: DataSummary) -> None:
        check_classifier(cfg, data)

    def run(self, ctx: StageContext) -> ClassifierResult:
        from medseg_weak.classify.backbones import load_weights
        from medseg_weak.classify.module import ClassifierModule
        from medseg_weak.data.datamodule import restrict_classes
        from medseg_weak.data.prepare import write_split_table

        cfg, out = ctx.cfg, ctx.out
        manifest = restrict_classes(ctx.manifest, cfg.classifier.classes)
        write_split_table(manifest, out / "splits.csv")
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        data = make_datamodule(cfg, manifest, ctx.run)
        module = ClassifierModule.from_config(
            cfg.classifier, list(manifest.labels), manifest.domains, cfg.seed
        )
        if cfg.classifier.weights:
            load_weights(module.model.backbone, cfg.classifier.weights)
        else:
            log.info("classifier backbone '%s' starts from random weights", cfg.classifier.backbone)
        trainer = make_trainer(cfg, out, ctx.progress)
        trainer.callbacks.extend(self.callbacks)
        fitted = fit_resumable(trainer, module, out, datamodule=data)
        best, score = fitted.best, fitted.score
        trainer.test(module, datamodule=data, ckpt_path=str(best), verbose=False)
        metrics = {
            "best_checkpoint": best.name,
            "monitor": cfg.classifier.monitor,
            "best_score": score,
            "resumed_from_epoch": fitted.resumed_from_epoch,  # None: trained from the start
            "labels": list(manifest.labels),
            "domains": manifest.domains,
            "test_domain": cfg.data.test_domain,
            "rule": cfg.classifier.surgery.rule,
            "test": module.test_results,
        }
        write_predictions(module, data, manifest, out / "predictions.csv")
        atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        return ClassifierResult(out, best, metrics)

    def load(self, ctx: StageContext) -> ClassifierResult:
        metrics = json.loads((ctx.out / "metrics.json").read_text())
        return ClassifierResult(ctx.out, ctx.best_checkpoint(self.name), metrics)
