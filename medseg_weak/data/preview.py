"""`medseg-weak data preview`: a montage per hospital of what the model will see.

Shows the preprocessed image (flipped, cropped, resized) with the breast / field-of-view outline and
the ground-truth mask contour, so a person can spot a bad crop, a wrong flip or a misaligned mask
in seconds.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from medseg_weak.data.cache import ArrayCache
from medseg_weak.data.dataset import PreprocessedDataset
from medseg_weak.errors import InputError
from medseg_weak.data.manifest import Manifest
from medseg_weak.io_utils import atomic_write


def pick_examples(manifest: Manifest, per_domain: int) -> dict[str, list[int]]:
    """Up to ``per_domain`` indices per hospital, cycling through labels so every class shows."""
    picks: dict[str, list[int]] = {}
    for domain in manifest.domains:
        by_label: dict[str, list[int]] = {}
        for i, r in enumerate(manifest.records):
            if r.domain == domain:
                by_label.setdefault(r.label, []).append(i)
        # A seeded shuffle mixes views and sides instead of always showing each patient's first image.
        rng = np.random.default_rng(0)
        queues = [list(rng.permutation(by_label[label])) for label in manifest.labels if label in by_label]
        chosen: list[int] = []
        while len(chosen) < per_domain and any(queues):
            for queue in queues:
                if queue and len(chosen) < per_domain:
                    chosen.append(int(queue.pop(0)))
        picks[domain] = chosen
    return picks


def write_preview(
    manifest: Manifest,
    out: str | Path,
    kind: str,
    size: int = 256,
    per_domain: int = 6,
    cache: ArrayCache | None = None,
) -> Path:
    out = Path(out)
    fmt = out.suffix.lstrip(".").lower() or "png"
    supported = plt.figure().canvas.get_supported_filetypes()
    plt.close("all")
    if fmt not in supported:  # before any image is decoded
        raise InputError(out, f"unknown image format '.{fmt}'; use one of {', '.join(sorted(supported))}")
    dataset = PreprocessedDataset(manifest, kind, size, cache)
    picks = pick_examples(manifest, per_domain)
    rows, cols = len(picks), max(1, max(len(v) for v in picks.values()))
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for row, (domain, indices) in enumerate(picks.items()):
        for col, index in enumerate(indices):
            arrays, geometry = dataset.load(index)
            record = manifest.records[index]
            ax = axes[row, col]
            pixels = arrays["pixels"]
            ax.imshow(pixels, cmap=None if pixels.ndim == 3 else "gray", vmin=0, vmax=1)
            ax.contour(arrays["region"].astype(float), levels=[0.5], colors="cyan", linewidths=0.6)
            if "mask" in arrays and np.any(arrays["mask"]):
                ax.contour((arrays["mask"] > 0).astype(float), levels=[0.5], colors="red", linewidths=0.6)
            flip = " flipped" if geometry.get("flipped") else ""
            ax.set_title(f"{record.id}\n{record.label} {record.view}{flip}", fontsize=7)
        axes[row, 0].text(
            -0.08,
            0.5,
            domain,
            transform=axes[row, 0].transAxes,
            rotation=90,
            ha="right",
            va="center",
            fontsize=11,
            fontweight="bold",
        )
    fig.suptitle("cyan: breast / field of view   red: ground-truth mask", fontsize=9)
    fig.tight_layout()
    atomic_write(out, lambda tmp: fig.savefig(tmp, dpi=110, format=fmt))
    plt.close(fig)
    return out
