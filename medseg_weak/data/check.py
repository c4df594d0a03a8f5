"""`medseg-weak data check`: validate a manifest and every file it names, and summarise the data set.

Collects every problem instead of stopping at the first, because a user fixing a 10,000-image export
wants the whole list in one go.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medseg_weak.data.io import read_image, read_mask
from medseg_weak.data.manifest import Manifest, load_manifest
from medseg_weak.errors import InputError, ManifestError


@dataclass
class DomainSummary:
    labels: Counter[str] = field(default_factory=Counter)
    heights: list[int] = field(default_factory=list)
    widths: list[int] = field(default_factory=list)
    photometric: Counter[str] = field(default_factory=Counter)
    bits: Counter[str] = field(default_factory=Counter)
    masks: int = 0


@dataclass
class CheckReport:
    manifest: Manifest | None
    domains: dict[str, DomainSummary]
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def check_manifest(
    path: str | Path,
    labels: Sequence[str] | None = None,
    decode: bool = True,
    progress: Callable[[int], None] | None = None,
) -> CheckReport:
    """Validate the manifest, then (``decode``) read every image and mask to find corrupt files."""
    try:
        manifest = load_manifest(path, labels=labels)
    except ManifestError as err:
        return CheckReport(None, {}, list(err.problems))
    domains: dict[str, DomainSummary] = defaultdict(DomainSummary)
    problems: list[str] = []
    for record in manifest.records:
        summary = domains[record.domain]
        summary.labels[record.label] += 1
        if decode:
            problems.extend(_check_files(manifest, record, summary))
        if progress is not None:
            progress(1)
    return CheckReport(manifest, dict(sorted(domains.items())), problems)


def _check_files(manifest: Manifest, record, summary: DomainSummary) -> list[str]:  # noqa: ANN001
    try:
        image = read_image(manifest.image_path(record))
    except InputError as err:
        return [f"{record.id}: {err}"]
    h, w = image.pixels.shape[:2]
    summary.heights.append(h)
    summary.widths.append(w)
    summary.photometric[str(image.meta.get("photometric_interpretation", image.meta.get("source", "?")))] += 1
    summary.bits[str(image.meta.get("bits_stored", "?"))] += 1
    mask_path = manifest.mask_path(record)
    if mask_path is None:
        return []
    try:
        mask = read_mask(mask_path)
    except InputError as err:
        return [f"{record.id}: mask {err}"]
    summary.masks += 1
    if mask.shape[:2] != (h, w):
        return [f"{record.id}: mask {mask_path.name} is {mask.shape[:2]}, image is {(h, w)}"]
    return []


def size_range(values: list[int]) -> str:
    if not values:
        return "-"
    lo, hi = int(np.min(values)), int(np.max(values))
    return f"{lo}" if lo == hi else f"{lo}-{hi}"
