"""The invariance section: per-layer curves, unit heatmaps, per hospital table, CAM equivariance, and
the train x eval invariance matrix when the run has one."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from medseg_weak.report.context import ReportContext
from medseg_weak.report.views import Facts, Figure, Section, plain_table, read_result_table


def _csv_rows(path: Path) -> tuple[list[str], list[list[Any]]]:
    with path.open(newline="") as f:
        records = list(csv.reader(f))
    header, rows = records[0], records[1:]
    return header, [[_value(v) for v in row] for row in rows]


def _value(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


def invariance_blocks(ctx: ReportContext) -> list[Any]:
    folder = ctx.run.stage("invariance")
    summary = json.loads((folder / "summary.json").read_text())
    settings = summary.get("settings", {})
    stays = summary.get("cam_stays_put") or {}
    facts = [
        ("measure", str(settings.get("measure"))),
        ("images", str(settings.get("images"))),
        ("layers", ", ".join(settings.get("layers", []))),
        (
            "CAM methods whose maps stay put while the image moves",
            ", ".join(m for m, s in stays.items() if s) or "none",
        ),
    ]
    blocks: list[Any] = [Facts(facts)]
    blocks.append(
        read_result_table(folder / "by_domain.csv", "per transformation and hospital (mean over layers)")
    )
    for name, caption in (
        ("curves.png", "invariance versus depth, a line per transformation"),
        ("units.png", "units per layer (sorted), per transformation"),
    ):
        src = ctx.copy_figure(folder / name, f"invariance_{name}")
        if src:
            blocks.append(Figure(src, caption))
    cams = folder / "cam_equivariance.csv"
    if cams.is_file():
        header, rows = _csv_rows(cams)
        keep = ["method", "transformation", "spatial", "pearson", "dice", "pearson_unmoved", "stays_put"]
        index = [header.index(k) for k in keep if k in header]
        blocks.append(
            plain_table("CAM equivariance", [header[i] for i in index], [[r[i] for i in index] for r in rows])
        )
    return blocks


def matrix_blocks(ctx: ReportContext) -> list[Any]:
    folder = ctx.run.root / "matrix"
    table = folder / "matrix.csv"
    if not table.is_file():
        return []
    header, rows = _csv_rows(table)
    blocks: list[Any] = [
        plain_table("invariance matrix (rows: training augmentation, columns: evaluation)", header, rows)
    ]
    src = ctx.copy_figure(folder / "matrix.png", "invariance_matrix.png")
    if src:
        blocks.append(Figure(src, "invariance matrix heatmap"))
    return blocks


def build(ctx: ReportContext) -> Section | None:
    blocks = invariance_blocks(ctx) if ctx.has("invariance") else []
    blocks += matrix_blocks(ctx)
    if not blocks:
        return None
    intro = (
        "tmeasures' normalized variance (transformation variance over sample variance; lower = more "
        "invariant) per layer; CAM equivariance compares CAM(T x) with T(CAM(x))."
    )
    return Section("invariance", "Invariance", blocks, intro)
