"""The classifier section: test metrics per hospital, confusion matrices, training curves and the
gradient-conflict diagnostics the surgery rules log."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path
from typing import Any

from medseg_weak.report import plots
from medseg_weak.report.context import ReportContext
from medseg_weak.report.views import Figure, Section, plain_table

METRICS = ("accuracy", "balanced_accuracy", "auroc", "f1", "kappa")


def test_counts(splits: Path) -> Counter:
    """Test images per hospital from classifier/splits.csv (the images the metrics are over)."""
    if not splits.is_file():
        return Counter()
    with splits.open(newline="") as f:
        return Counter(r["domain"] for r in csv.DictReader(f) if r["split"] == "test")


def metrics_blocks(ctx: ReportContext, folder: Path, prefix: str = "") -> list[Any]:
    """The metrics table and confusion matrices of one classifier folder (a fold's, for leave-one-out)."""
    path = folder / "metrics.json"
    if not path.is_file():
        return []
    metrics = json.loads(path.read_text())
    test, labels = metrics.get("test", {}), metrics.get("labels", [])
    counts = test_counts(folder / "splits.csv")
    groups = [("all", ""), *((d, f"{d}/") for d in metrics.get("domains", []))]
    rows = [
        [name, *(test.get(f"{key}{m}") for m in METRICS), counts.total() if name == "all" else counts[name]]
        for name, key in groups
        if f"{key}accuracy" in test
    ]
    held_out = metrics.get("test_domain")
    title = "test metrics per hospital" + (f" ({held_out} held out)" if held_out else "")
    blocks: list[Any] = [plain_table(title, ["hospital", *METRICS, "n"], rows)]
    return blocks + confusion_figures(ctx, test, labels, groups, f"{prefix}confusion_", "test images")


def confusion_figures(
    ctx: ReportContext,
    test: dict[str, Any],
    labels: list[str],
    groups: list[tuple[str, str]],
    name: str,
    what: str,
) -> list[Figure]:
    """A confusion-matrix figure per (group, metrics key prefix) whose metrics hold one."""
    figures = []
    for group, key in groups:
        matrix = test.get(f"{key}confusion")
        if matrix:
            out = ctx.figure_path(f"{name}{group}.png")
            plots.confusion_matrix(matrix, labels, f"{group} (test)", out)
            figures.append(Figure(ctx.rel(out), f"confusion matrix, {group} {what}"))
    return figures


def build(ctx: ReportContext) -> Section | None:
    if not ctx.has("classifier"):
        return None
    folder = ctx.run.stage("classifier")
    blocks = metrics_blocks(ctx, folder)
    log = folder / "logs" / "metrics.csv"
    curves = plots.training_curves(log, ctx.figure_path("classifier_curves.png"), "classifier")
    if curves:
        blocks.append(Figure(ctx.rel(curves), "training curves (logs/metrics.csv)"))
    conflict = plots.gradient_conflict(log, ctx.figure_path("gradient_conflict.png"))
    if conflict:
        rule = ctx.cfg.classifier.surgery.rule
        blocks.append(Figure(ctx.rel(conflict), f"gradient-conflict diagnostics (rule: {rule})"))
    intro = f"backbone {ctx.cfg.classifier.backbone}, gradient rule {ctx.cfg.classifier.surgery.rule}."
    return Section("classifier", "Classifier", blocks, intro)
