"""The segmenter section: CAM masks vs UNet on CAMs vs oracle per hospital and class, worst cases."""

from __future__ import annotations

import json
from typing import Any

from medseg_weak.report.context import ReportContext
from medseg_weak.report.plots import training_curves
from medseg_weak.report.views import Figure, Links, Section, read_result_table

METRICS = (("dice", "Dice"), ("iou", "IoU"), ("hd95", "HD95 (px)"))


def result_tables(ctx: ReportContext, folder_name: str = "eval", prefix: str = "") -> list[Any]:
    """The eval tables (and the Dice bar plot) of one eval folder, relative to the run."""
    folder = ctx.run.root / folder_name
    blocks: list[Any] = []
    for by in ("hospital", "class"):
        for metric, name in METRICS:
            path = folder / f"{metric}_by_{by}.csv"
            if path.is_file():
                blocks.append(read_result_table(path, f"{name} by {by} (mean ± SE, n images)"))
    plot = ctx.copy_figure(folder / "dice_by_hospital.png", f"{prefix}dice_by_hospital.png")
    if plot:
        blocks.append(Figure(plot, "Dice by hospital (bars: mean, whiskers: SE)"))
    return blocks


def worst_cases(ctx: ReportContext) -> Links | None:
    path = ctx.run.stage("eval") / "cases.json"
    if not path.is_file():
        return None
    cases = json.loads(path.read_text())
    items = []
    for image_id, dice in cases.get("worst", []):
        full = ctx.out / "gallery" / "full" / f"{image_id}.png"
        items.append((f"{image_id} (Dice {dice:.3f})", ctx.rel(full) if full.is_file() else ""))
    return Links(f"worst test images ({cases.get('method')}, lowest Dice first)", items)


def build(ctx: ReportContext) -> Section | None:
    if not ctx.has("eval") or ctx.run.held_out_domains() is not None:
        return None  # leave-one-out: the folds section shows the pooled table
    blocks = result_tables(ctx)
    worst = worst_cases(ctx)
    if worst is not None:
        blocks.append(worst)
    for stage in [s for s in ctx.stages if s.startswith(("segmenter", "oracle"))]:
        log = ctx.run.stage(stage) / "logs" / "metrics.csv"
        curves = training_curves(log, ctx.figure_path(f"{stage}_curves.png"), stage)
        if curves:
            blocks.append(Figure(ctx.rel(curves), f"{stage}: training curves"))
    intro = (
        "Does a UNet trained on CAM pseudo-masks beat the masks themselves, and how far is it from the "
        "oracle (the same UNet trained on the ground truth)? Rows: cam = the pseudo-masks, unet_cam = the "
        "UNet on them, unet_truth = the oracle."
    )
    return Section("segmenter", "Segmenter: CAM vs UNet-on-CAM vs oracle", blocks, intro)
