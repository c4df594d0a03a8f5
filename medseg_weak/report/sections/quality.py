"""The quality-model section: EyeQ metrics per camera, confusion matrices and training curves."""

from __future__ import annotations

import json
from typing import Any

from medseg_weak.report import plots
from medseg_weak.report.context import ReportContext
from medseg_weak.report.sections.classifier import confusion_figures
from medseg_weak.report.views import Figure, Section, plain_table

METRICS = (
    "accuracy",
    "auroc",
    "f1_macro",
    "sensitivity_macro",
    "specificity_macro",
    "precision_macro",
    "mask_dice",
    "n",
)


def build(ctx: ReportContext) -> Section | None:
    if not ctx.has("quality"):
        return None
    folder = ctx.run.stage("quality")
    metrics = json.loads((folder / "metrics.json").read_text())
    test, labels = metrics.get("test", {}), metrics.get("labels", [])
    groups = [("all", ""), *((d, f"{d}/") for d in metrics.get("domains", []))]
    rows = [[name, *(test.get(f"{key}{m}") for m in METRICS)] for name, key in groups if f"{key}n" in test]
    held_out = metrics.get("test_domain")
    title = "EyeQ metrics on the test images per camera" + (f" ({held_out} held out)" if held_out else "")
    blocks: list[Any] = [plain_table(title, ["camera", *METRICS], rows)]
    per_grade = ("f1", "sensitivity", "precision", "specificity", "auroc")
    per_class = [[c, *(test.get(f"{m}_{c}") for m in per_grade)] for c in labels]
    blocks.append(plain_table("per grade (all test images)", ["grade", *per_grade], per_class))
    blocks += confusion_figures(ctx, test, labels, groups, "quality_confusion_", "test photographs")
    curves = plots.training_curves(
        folder / "logs" / "metrics.csv", ctx.figure_path("quality_curves.png"), "quality"
    )
    if curves:
        blocks.append(Figure(ctx.rel(curves), "training curves (logs/metrics.csv)"))
    q = ctx.cfg.quality
    intro = (
        f"UNet ({q.encoder}, depth {q.encoder_depth}) grading {', '.join(labels)}; the decoder segments the "
        f"degradations (mask_weight {q.mask_weight}); best checkpoint by {metrics.get('monitor')}."
    )
    return Section("quality", "Quality model", blocks, intro)
