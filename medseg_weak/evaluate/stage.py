"""The evaluation stages: one run's test images (``EvalStage``) and a leave-one-out run's pooled
held-out images (``PooledEvalStage``), both into ``eval/``. Lifecycle is the runner's: rescoring
after a segmenter changed happens because its digest is part of the fingerprint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medseg_weak.config import Config
from medseg_weak.errors import InputError
from medseg_weak.rundir import RunDir
from medseg_weak.stages import DataSummary, Stage, StageContext, StageResult, stage_config

# method name in the tables -> the stage whose best checkpoint it scores
SEGMENTERS = {"unet_cam": "segmenter", "unet_truth": "oracle"}


@dataclass(frozen=True)
class EvalResult(StageResult):
    @property
    def per_image(self) -> Path:
        return self.folder / "per_image.csv"

    def rows(self) -> list[dict[str, Any]]:
        from medseg_weak.evaluate.heldout import read_per_image

        return read_per_image(self.per_image)

    def table(self, metric: str = "dice", by: str = "hospital") -> str:
        """The Markdown table of ``metric`` by ``hospital`` or ``class`` (mean ± SE per method)."""
        return (self.folder / f"{metric}_by_{by}.md").read_text()

    def key_files(self) -> list[Path]:
        return [self.per_image]


def _methods(cfg: Config) -> dict[str, str]:
    methods = dict(SEGMENTERS)
    if cfg.segmenter.self_training_rounds > 0:
        methods["unet_self"] = f"segmenter_self{cfg.segmenter.self_training_rounds}"
    return methods


class EvalStage(Stage):
    """CAM pseudo-masks vs UNet on CAMs (vs self-training) vs the oracle, on the test images."""

    name = "eval"

    def __init__(self, cfg: Config) -> None:
        self.methods = _methods(cfg)
        self.needs = ("cams", *self.methods.values())

    def fingerprint(self, cfg: Config) -> dict[str, Any]:
        relevant = stage_config(cfg, "data")
        relevant["methods"] = self.methods
        return relevant

    def validate(self, cfg: Config, data: DataSummary) -> None:
        if not data.has_truth:
            raise InputError(data.source, "evaluation needs a ground-truth mask (mask_path) per image")

    def run(self, ctx: StageContext) -> EvalResult:
        from medseg_weak.evaluate.heldout import evaluate_heldout

        checkpoints = {name: ctx.best_checkpoint(stage) for name, stage in self.methods.items()}
        evaluate_heldout(ctx.cfg, ctx.manifest, ctx.run, checkpoints, ctx.out)
        return EvalResult(ctx.out)

    def load(self, ctx: StageContext) -> EvalResult:
        return EvalResult(ctx.out)


class PooledEvalStage(Stage):
    """Leave-one-out: each fold's held-out images, pooled; a column per held-out hospital."""

    name = "eval"

    def __init__(self, run: RunDir, domains: list[str], labels: list[str]) -> None:
        self.run_dir = run
        self.domains = list(domains)
        self.labels = list(labels)

    def fingerprint(self, cfg: Config) -> dict[str, Any]:
        digests = {}
        for domain in self.domains:
            state = self.run_dir.fold(domain).read_state("eval")
            digests[domain] = (state or {}).get("digest", "")
        return {"folds": digests}

    def run(self, ctx: StageContext) -> EvalResult:
        from medseg_weak.evaluate.heldout import evaluate_folds

        evaluate_folds(self.run_dir, self.domains, self.labels, ctx.out)
        return EvalResult(ctx.out)

    def load(self, ctx: StageContext) -> EvalResult:
        return EvalResult(ctx.out)
