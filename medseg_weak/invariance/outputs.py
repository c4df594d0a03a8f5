"""Files of an invariance run: per-layer CSV and JSON, curves versus depth, unit heatmaps, the per
hospital table and CAM equivariance. One responsibility: turn measured results into files. Layout::

    per_layer.csv       one row per (transformation, group, layer): the measure's layer mean
    per_unit.csv        one row per (transformation, layer, unit), the pooled result
    by_domain.{csv,md}  mean over layers per transformation (rows) and hospital (columns)
    summary.json        settings, layers, per transformation: per-layer values, per-hospital means
    curves.png          invariance versus depth, a line per transformation
    units.png           a heatmap of units per layer, one panel per transformation
    cam_equivariance.{csv,md}  per (method, transformation); methods whose maps stay put are flagged
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from medseg_weak.core.figures import pyplot, save_figure
from medseg_weak.invariance.cam_equivariance import CamEquivarianceResult
from medseg_weak.invariance.result import ALL, InvarianceResult
from medseg_weak.io_utils import atomic_write_text
from medseg_weak.tables import Table


def overall(result: InvarianceResult) -> float:
    """The mean over layers of the layer means (finite ones): one number per transformation."""
    values = [v for v in result.per_layer.values() if math.isfinite(v)]
    return float(np.mean(values)) if values else math.nan


def write_invariance_outputs(
    results: Mapping[str, InvarianceResult],
    out_dir: Path,
    settings: dict[str, Any],
    cams: CamEquivarianceResult | None = None,
) -> list[Path]:
    """``results``: {transformation set name: result of one measure}. Returns the files written."""
    out = Path(out_dir)
    paths = [_rows_csv(out / "per_layer.csv", results, per_unit=False)]
    paths.append(_rows_csv(out / "per_unit.csv", results, per_unit=True))
    triples = []
    for name, result in results.items():
        triples.append((name, ALL, overall(result)))
        triples += [(name, g, overall(r)) for g, r in sorted(result.groups.items())]
    table = Table.from_values(f"{settings.get('measure')} (mean over layers)", triples, average_column=None)
    paths += table.write(out, "by_domain", plot=False)
    summary = {
        "settings": settings,
        "transformations": {
            name: {
                "parameters": r.transformations,
                "per_layer": {k: _num(v) for k, v in r.per_layer.items()},
                "overall": _num(overall(r)),
                "by_domain": {g: _num(overall(r.groups[g])) for g in r.groups},
            }
            for name, r in results.items()
        },
    }
    if cams is not None:
        paths.append(cams.to_csv(out / "cam_equivariance.csv"))
        paths.append(atomic_write_text(out / "cam_equivariance.md", cam_markdown(cams)))
        summary["cam_stays_put"] = cams.stays_put()
    paths.append(atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n"))
    paths.append(plot_curves(results, out / "curves.png", str(settings.get("measure"))))
    paths.append(plot_units(results, out / "units.png"))
    return paths


def cam_markdown(cams: CamEquivarianceResult) -> str:
    flags = cams.stays_put()
    lines = [
        "| method | transformation | spatial | Pearson | Dice | Pearson unmoved | stays put |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for r in cams.rows:
        lines.append(
            f"| {r.method} | {r.transformation} | {'yes' if r.spatial else 'no'} | {_fmt(r.pearson)} | "
            f"{_fmt(r.dice)} | {_fmt(r.pearson_unmoved)} | {'FLAGGED' if flags[r.method] else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def _rows_csv(path: Path, results: Mapping[str, InvarianceResult], per_unit: bool) -> Path:
    rows = []
    for name, result in results.items():
        for row in result.to_rows(per_unit):
            if per_unit and row["group"] != ALL:
                continue
            rows.append({"transformation": name, **row})
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=list(rows[0]) if rows else ["transformation"], lineterminator="\n"
    )
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(path, buffer.getvalue())


def plot_curves(results: Mapping[str, InvarianceResult], path: Path, measure: str) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    layers: list[str] = []
    for name, result in results.items():
        layers = result.layers
        values = [result.per_layer[layer] for layer in layers]
        ax.plot(
            range(len(layers)), [v if math.isfinite(v) else np.nan for v in values], marker="o", label=name
        )
    ax.set_xticks(range(len(layers)), [layer.rsplit(".", 1)[-1] for layer in layers], rotation=45, ha="right")
    ax.set_xlabel("layer (input to output)")
    ax.set_ylabel(measure)
    ax.set_title(f"{measure} per layer (lower = more invariant)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_units(results: Mapping[str, InvarianceResult], path: Path) -> Path:
    """One panel per transformation: rows = layers, columns = units (sorted per layer), colour = value."""
    plt = pyplot()
    n = len(results)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.2), squeeze=False)
    for ax, (name, result) in zip(axes[0], results.items()):
        flat = [np.sort(v.reshape(-1)[np.isfinite(v.reshape(-1))]) for v in result.per_unit.values()]
        width = max((len(f) for f in flat), default=1) or 1
        grid = np.full((len(flat), width), np.nan)
        for i, values in enumerate(flat):
            if len(values):  # stretch each layer's sorted units over the width: layers differ in size
                grid[i] = np.interp(np.linspace(0, len(values) - 1, width), np.arange(len(values)), values)
        image = ax.imshow(grid, aspect="auto", cmap="viridis", interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.set_yticks(range(len(flat)), [layer.rsplit(".", 1)[-1] for layer in result.layers], fontsize=7)
        ax.set_xticks([])
        ax.set_xlabel("units (sorted)")
        fig.colorbar(image, ax=ax, fraction=0.05)
    return save_figure(fig, path)


def _num(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _fmt(x: float) -> str:
    return f"{x:.3f}" if math.isfinite(x) else "-"
