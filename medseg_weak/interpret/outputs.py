"""Files of an interpretability run: metrics.json, CSV tables, curve plots and overlay galleries.

One responsibility: write an :class:`InterpretResult` to a folder, so the stage that runs it later is
a thin call. Layout::

    metrics.json                      headline: per method mean / SE / n, flags, sanity verdicts
    per_image.csv                     one row per (method, image) with every metric
    by_method.{csv,md}  by_class.*  by_domain.*   mean ± SE tables (medseg_weak.tables.Table)
    curves.png                        mean deletion / insertion curves per method (± SE band)
    randomisation.png                 Spearman and SSIM per cascade step per method
    gallery_<method>.png              best, worst and random images (image | CAM + mask contour)

"Best" and "worst" rank images by deletion AUC (lowest = the map found the evidence).
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medseg_weak.core.figures import pyplot, save_figure
from medseg_weak.explain.overlay import overlay
from medseg_weak.interpret.results import METRICS, InterpretResult, headline, summary_table
from medseg_weak.io_utils import atomic_write_text

if TYPE_CHECKING:
    pass

GALLERY_SIZE = 4


def write_interpret_outputs(
    result: InterpretResult, out_dir: Path, seed: int = 0, gallery_size: int = GALLERY_SIZE
) -> list[Path]:
    """Write every file listed in the module docstring; returns their paths.

    ``gallery_size``: images per gallery row (best, worst, random); ``seed`` picks the random row.
    """
    out = Path(out_dir)
    paths = [
        atomic_write_text(out / "metrics.json", json.dumps(headline(result), indent=2) + "\n"),
        atomic_write_text(out / "per_image.csv", per_image_csv(result)),
    ]
    for by in ("method", "class", "domain"):
        paths += summary_table(result, by).write(out, f"by_{by}", plot=False)
    paths.append(plot_curves(result, out / "curves.png"))
    if result.sanity or result.data_randomisation:
        paths.append(plot_randomisation(result, out / "randomisation.png"))
    rng = np.random.default_rng(seed)
    for scores in result.methods.values():
        gallery = out / f"gallery_{_safe(scores.method)}.png"
        paths.append(write_gallery(result, scores.method, gallery, rng, gallery_size))
    return paths


def per_image_csv(result: InterpretResult) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["method", "baseline", "id", "label", "domain", "target", *METRICS])
    for scores in result.methods.values():
        for i, image_id in enumerate(result.ids):
            row = [scores.method, int(scores.baseline), image_id, result.labels[i], result.domains[i]]
            row.append(int(result.targets[i]))
            row += [_fmt(scores.metric(m)[i]) for m in METRICS]
            writer.writerow(row)
    return buf.getvalue()


def plot_curves(result: InterpretResult, path: Path) -> Path:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    x = np.linspace(0, 1, result.steps + 1)
    for scores in result.methods.values():
        style = "--" if scores.baseline else "-"
        for ax, curves in zip(axes, (scores.deletion_curve, scores.insertion_curve)):
            mean = curves.mean(axis=0)
            se = curves.std(axis=0, ddof=1) / math.sqrt(len(curves)) if len(curves) > 1 else 0 * mean
            (line,) = ax.plot(x, mean, style, label=scores.method)
            ax.fill_between(x, mean - se, mean + se, color=line.get_color(), alpha=0.15)
    for ax, title in zip(
        axes, ("deletion (lower area = more faithful)", "insertion (higher area = more faithful)")
    ):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("fraction of pixels perturbed, in map order")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"class {result.settings.get('score', 'score')}")
    axes[1].legend(fontsize=7)
    return save_figure(fig, path)


def plot_randomisation(result: InterpretResult, path: Path) -> Path:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for name, check in result.sanity.items():
        for ax, values in zip(axes, (check.spearman, check.ssim)):
            ax.plot(range(len(check.steps)), np.nanmean(values, axis=1), "o-", label=name)
            ax.set_xticks(range(len(check.steps)), check.steps, rotation=60, fontsize=6)
    for name, check in result.data_randomisation.items():
        for ax, values in zip(axes, (check.spearman, check.ssim)):
            ax.axhline(float(np.nanmean(values)), linestyle=":", linewidth=1, label=f"{name}: random labels")
    for ax, title in zip(axes, ("Spearman vs original maps", "SSIM vs original maps")):
        ax.set_title(title + " (cascade from the top layer)", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].axhline(0.5, color="k", linewidth=0.8, linestyle="--")
    axes[1].legend(fontsize=7)
    return save_figure(fig, path)


def write_gallery(
    result: InterpretResult, method: str, path: Path, rng: np.random.Generator, size: int = 4
) -> Path:
    """Rows best / worst / random; per image two panels: the image, then CAM with the mask contour.

    The panels are composited into one RGB array (one matplotlib axes per gallery, not one per
    panel: figures with dozens of axes took seconds each on the shared CPU)."""
    plt = pyplot()
    scores = result.methods[method]
    auc = scores.metric("deletion_auc")
    order = np.argsort(auc, kind="stable")
    k = min(size, len(order))
    picks = {
        "best": order[:k],
        "worst": order[::-1][:k],
        "random": rng.choice(len(order), size=k, replace=False),
    }
    h, w = scores.maps.shape[-2:]
    gap = max(2, h // 24)
    grid = np.ones((3 * h + 2 * gap, 2 * k * w + (2 * k - 1) * gap, 3))
    fig, ax = plt.subplots(figsize=(max(4.0, 2 * k * 1.3), 3 * 1.4 + 0.6))
    for r, (row_name, idx) in enumerate(picks.items()):
        y = r * (h + gap)
        for j, i in enumerate(idx):
            image = _display(result.images[i])
            mask = None if result.masks is None else result.masks[i].astype(np.uint8)
            x = 2 * j * (w + gap)
            grid[y : y + h, x : x + w] = image[..., None] if image.ndim == 2 else image
            grid[y : y + h, x + w + gap : x + 2 * w + gap] = overlay(image, scores.maps[i], mask) / 255.0
            ax.text(x, y - 1, f"{result.ids[i]}  del {auc[i]:.2f}", fontsize=6, va="bottom")
        ax.text(-gap, y + h / 2, row_name, fontsize=8, ha="right", va="center")
    ax.imshow(grid, interpolation="nearest")
    ax.axis("off")
    ax.set_title(f"{method}: best / worst / random by deletion AUC (image | CAM + mask)", fontsize=9, pad=12)
    return save_figure(fig, path)


def _display(image: np.ndarray) -> np.ndarray:
    """``[C, H, W]`` -> HxW grey or HxWx3 colour in [0, 1] for display."""
    shown = image[0] if image.shape[0] == 1 else np.moveaxis(image[:3], 0, -1)
    lo, hi = float(shown.min()), float(shown.max())
    return (shown - lo) / (hi - lo) if hi > lo else np.zeros_like(shown)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name.replace("++", "pp"))


def _fmt(value: float) -> str:
    return f"{float(value):.6g}" if math.isfinite(float(value)) else ""
