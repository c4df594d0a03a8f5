"""The report's figures (matplotlib, Agg): confusion matrices, training curves, gradient conflict.

Each function writes one PNG and returns its path, or None when the run has nothing to plot.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from medseg_weak.io_utils import atomic_write


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
    return path


def confusion_matrix(
    matrix: Sequence[Sequence[float]], labels: Sequence[str], title: str, path: Path
) -> Path:
    """Counts with true class as rows, predicted as columns (torchmetrics' orientation)."""
    fig, ax = plt.subplots(figsize=(2.2 + 0.35 * len(labels), 2.0 + 0.35 * len(labels)))
    ax.imshow(matrix, cmap="Blues")
    top = max((v for row in matrix for v in row), default=0)
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            colour = "white" if top and value > top / 2 else "black"
            ax.text(j, i, f"{value:g}", ha="center", va="center", fontsize=8, color=colour)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def read_log(path: Path) -> dict[str, list[tuple[float, float]]]:
    """Lightning's CSVLogger file as {column: [(epoch or step, value), ...]} (empty cells skipped)."""
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                if key in ("epoch", "step") or not value:
                    continue
                x = row["step"] if key.startswith("surgery/") or key.endswith("_step") else row["epoch"]
                series[key].append((float(x), float(value)))
    return dict(series)


def _lines(ax: plt.Axes, series: dict[str, list[tuple[float, float]]], names: list[str], xlabel: str) -> None:
    for name in names:
        points = sorted(series[name])
        ax.plot(
            [p[0] for p in points],
            [p[1] for p in points],
            marker="." if len(points) < 30 else None,
            label=name,
        )
    ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def training_curves(log: Path, path: Path, title: str) -> Path | None:
    """Per-epoch losses and the validation metrics over all hospitals, side by side."""
    if not log.is_file():
        return None
    series = read_log(log)
    epoch_keys = [k for k in series if not k.startswith("surgery/") and not k.endswith("_step")]
    losses = [k for k in epoch_keys if "loss" in k and k.count("/") == 1]
    scores = [k for k in epoch_keys if k.startswith("val/") and "loss" not in k and k.count("/") == 1]
    if not losses and not scores:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(9, 3))
    _lines(axes[0], series, losses, "epoch")
    axes[0].set_title(f"{title}: losses", fontsize=9)
    _lines(axes[1], series, scores, "epoch")
    axes[1].set_title(f"{title}: validation", fontsize=9)
    return _save(fig, path)


def gradient_conflict(log: Path, path: Path) -> Path | None:
    """Sign disagreement over all parameters and pairwise cosines between hospitals, per step
    (logged by the classifier every ``diagnostics_every`` steps)."""
    if not log.is_file():
        return None
    series = read_log(log)
    cosines = sorted(k for k in series if k.startswith("surgery/cos/"))
    if "surgery/disagree/all" not in series and not cosines:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(9, 3))
    _lines(axes[0], series, [k for k in ("surgery/disagree/all",) if k in series], "step")
    axes[0].set_title("fraction of gradient components whose sign the hospitals disagree on", fontsize=8)
    _lines(axes[1], series, cosines, "step")
    axes[1].set_title("cosine between hospitals' gradients", fontsize=8)
    axes[1].set_ylim(-1.05, 1.05)
    return _save(fig, path)
