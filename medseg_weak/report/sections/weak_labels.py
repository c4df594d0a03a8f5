"""The weak-labels section: pseudo-mask quality per hospital and class, and the overlay gallery."""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg_weak.data.manifest import Record
from medseg_weak.data.prepare import cache_dir
from medseg_weak.report.context import ReportContext
from medseg_weak.report.gallery import COLOURS, GalleryItem, Predictor, render_gallery
from medseg_weak.report.views import Facts, Section, read_result_table

SEGMENTER = "segmenter"  # the stage whose UNet draws the prediction contour


@dataclass(frozen=True)
class Gallery:
    items: list[GalleryItem]
    legend: dict[str, str]  # contour name -> CSS colour
    domains: list[str]
    labels: list[str]
    splits: list[str]


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def image_scores(run_root: Path) -> dict[str, dict[str, Any]]:
    """Per id: the CAM index row (degenerate flag, pseudo-mask Dice) and the UNet's test Dice."""
    scores = {r["id"]: dict(r) for r in _rows(run_root / "cams" / "index.csv")}
    for r in _rows(run_root / "eval" / "per_image.csv"):
        if r["method"] == "unet_cam" and r["id"] in scores:
            scores[r["id"]]["unet_dice"] = r["dice"]
    return scores


def gallery(ctx: ReportContext) -> Gallery:
    predict: Predictor | None = None
    digest = ""
    state = ctx.run.read_state(SEGMENTER) if ctx.has(SEGMENTER) else None
    if state and state.get("best_checkpoint"):
        checkpoint = ctx.run.stage(SEGMENTER) / state["best_checkpoint"]

        @functools.cache
        def model() -> Predictor:
            # imported and loaded on the first picture not in the cache: importing the segmenter's
            # stack (smp, timm, lightning) costs more than rewriting a cached page
            from medseg_weak.report.predict import unet_predictor

            return unet_predictor(ctx.cfg, ctx.manifest, ctx.run, checkpoint)

        def predict(records: list[Record]) -> dict[str, np.ndarray]:
            return model()(records)

        digest = str(state.get("digest", ""))
    items = render_gallery(
        ctx.manifest,
        ctx.run.stage("cams"),
        ctx.out / "gallery",
        cache_dir(ctx.cfg, ctx.run) / "report",
        predict,
        digest,
        image_scores(ctx.run.root),
    )
    items.sort(key=lambda i: -1.0 if i.dice is None else i.dice)  # worst first: what users look for
    legend = {name: "rgb({},{},{})".format(*rgb) for name, rgb in COLOURS.items()}
    if predict is None:
        legend.pop("UNet")
    return Gallery(
        items,
        legend,
        sorted({i.domain for i in items}),
        [c for c in ctx.manifest.labels if any(i.label == c for i in items)],
        [s for s in ("train", "val", "test") if any(i.split == s for i in items)],
    )


def build(ctx: ReportContext) -> Section | None:
    if not ctx.has("cams") or ctx.manifest is None:
        return None
    cams = ctx.run.stage("cams")
    c = ctx.cfg.cams
    state = ctx.run.read_state("cams") or {}
    refined = c.mask.refine not in (None, "", "none")
    facts = [
        ("CAM method", f"{c.method} on layer {c.layer}, target class {c.target}"),
        ("mask rule", c.mask.threshold + (f", refined by {c.mask.refine}" if refined else "")),
        ("images", f"{state.get('images', '?')} ({state.get('degenerate', 0)} degenerate CAMs)"),
    ]
    blocks: list[Any] = [Facts(facts)]
    for by in ("hospital", "class"):
        path = cams / f"quality_by_{by}.csv"
        if path.is_file():
            blocks.append(read_result_table(path, f"pseudo-mask vs truth by {by} (mean ± SE, n images)"))
    blocks.append(gallery(ctx))
    return Section("weak-labels", "Weak labels (CAM pseudo-masks)", blocks)
