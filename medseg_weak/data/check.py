"""`medseg-weak data check`: validate a manifest and every file it names, and summarise the data set.

Collects every problem instead of stopping at the first, because a user fixing a 10,000-image export
wants the whole list in one go: every manifest problem (a bad row does not stop the files from being
checked), every missing or unreadable image, every mask of the wrong kind or size (an unreadable image
does not stop its mask from being read), every patient in two splits. Images are decoded in a process
pool, since decoding is what a check of a large export spends its time on.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medseg_weak.core.parallel import ordered_map
from medseg_weak.data.io import read_image, read_mask
from medseg_weak.data.manifest import Manifest, Problem, read_manifest
from medseg_weak.errors import InputError
from medseg_weak.io_utils import atomic_write_text
from medseg_weak.logs import forwarded_logs
from medseg_weak.progress import progress_bar

# Display order of the kinds: the manifest's own problems, then the files', then the data set's.
PROBLEM_KINDS: tuple[str, ...] = (
    "extra_values",
    "empty_value",
    "duplicate_id",
    "unknown_label",
    "unknown_split",
    "bad_laterality",
    "missing_file",
    "unreadable_image",
    "bad_mask",
    "mask_size",
    "patient_in_two_splits",
    "hospital_without_train_or_test",
)
PROBLEM_COLUMNS: tuple[str, ...] = ("kind", "id", "path", "message")
IMAGES_PER_WORKER = 16


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
    manifest: Manifest
    domains: dict[str, DomainSummary]
    problems: list[Problem]

    @property
    def ok(self) -> bool:
        return not self.problems

    def by_kind(self) -> dict[str, list[Problem]]:
        """Problems grouped by kind, in :data:`PROBLEM_KINDS` order (unlisted kinds last)."""
        groups: dict[str, list[Problem]] = defaultdict(list)
        for problem in self.problems:
            groups[problem.kind].append(problem)
        rank = {kind: i for i, kind in enumerate(PROBLEM_KINDS)}
        return dict(sorted(groups.items(), key=lambda kv: rank.get(kv[0], len(rank))))

    def write_problems(self, path: str | Path) -> Path:
        """Every problem as CSV (kind, id, path, message), grouped by kind like the screen."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(PROBLEM_COLUMNS)
        for problems in self.by_kind().values():
            writer.writerows([p.kind, p.id, p.path, p.message] for p in problems)
        return atomic_write_text(Path(path), buf.getvalue())


@dataclass(frozen=True)
class _FileTask:
    """What a worker needs to check one record's files: names for the report, paths to read."""

    id: str
    image_text: str
    image: Path | None  # None: missing or not named, already reported by the manifest check
    mask_text: str
    mask: Path | None


@dataclass(frozen=True)
class _FileResult:
    shape: tuple[int, int] | None
    photometric: str
    bits: str
    mask_read: bool
    problems: tuple[Problem, ...]


def check_manifest(
    path: str | Path,
    labels: Sequence[str] | None = None,
    decode: bool = True,
    workers: int | None = None,
    progress: bool = False,
) -> CheckReport:
    """Validate the manifest and (``decode``) read every image and mask it names that exists.

    ``workers`` processes decode (default: every CPU this process may use, but no more than one per
    :data:`IMAGES_PER_WORKER` images: for a handful of images, starting processes costs more than it
    saves). Raises
    :class:`InputError` only when the manifest is not a usable table at all (see ``read_manifest``).
    """
    manifest, problems = read_manifest(path, labels=labels, check_files=True)
    domains: dict[str, DomainSummary] = defaultdict(DomainSummary)
    for record in manifest.records:
        domains[record.domain].labels[record.label] += 1
    if decode:
        tasks = [_task(manifest, i) for i in range(len(manifest))]
        if workers is None:
            workers = max(1, min(len(os.sched_getaffinity(0)), len(tasks) // IMAGES_PER_WORKER))
        logs = forwarded_logs() if workers > 1 else contextlib.nullcontext((None, ()))
        with (
            progress_bar(len(tasks), "reading images", enabled=progress) as advance,
            logs as (initializer, initargs),
        ):
            results = ordered_map(_check_files, tasks, workers, initializer=initializer, initargs=initargs)
            for record, result in zip(manifest.records, results, strict=True):
                _summarise(domains[record.domain], result)
                problems.extend(result.problems)
                advance(1)
    report = CheckReport(manifest, dict(sorted(domains.items())), problems)
    report.problems = [p for group in report.by_kind().values() for p in group]
    return report


def _task(manifest: Manifest, index: int) -> _FileTask:
    record = manifest.records[index]
    image, mask = manifest.image_path(record), manifest.mask_path(record)
    return _FileTask(
        record.id,
        record.path,
        image if record.path and image.is_file() else None,
        record.mask_path,
        mask if mask is not None and mask.is_file() else None,
    )


def _summarise(summary: DomainSummary, result: _FileResult) -> None:
    if result.shape is not None:
        summary.heights.append(result.shape[0])
        summary.widths.append(result.shape[1])
        summary.photometric[result.photometric] += 1
        summary.bits[result.bits] += 1
    summary.masks += result.mask_read


def _check_files(task: _FileTask) -> _FileResult:
    """Read the image and the mask independently, so that one bad file never hides the other."""
    problems: list[Problem] = []
    shape, photometric, bits = None, "", ""
    if task.image is not None:
        try:
            image = read_image(task.image)
            shape = image.pixels.shape[:2]
            photometric = str(image.meta.get("photometric_interpretation", image.meta.get("source", "?")))
            bits = str(image.meta.get("bits_stored", "?"))
        except InputError as err:
            problems.append(Problem("unreadable_image", f"{task.id}: {err}", task.id, task.image_text))
    mask = None
    if task.mask is not None:
        try:
            mask = read_mask(task.mask)
        except InputError as err:
            problems.append(Problem("bad_mask", f"{task.id}: mask {err}", task.id, task.mask_text))
    if mask is not None and shape is not None and mask.shape[:2] != shape:
        message = f"{task.id}: mask {task.mask.name} is {mask.shape[:2]}, image is {shape}"
        problems.append(Problem("mask_size", message, task.id, task.mask_text))
    return _FileResult(shape, photometric, bits, mask is not None, tuple(problems))


def size_range(values: list[int]) -> str:
    if not values:
        return "-"
    lo, hi = int(np.min(values)), int(np.max(values))
    return f"{lo}" if lo == hi else f"{lo}-{hi}"
