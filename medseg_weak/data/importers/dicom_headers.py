"""Read the few DICOM header fields an import needs, from many files at once, never the pixels.

``stop_before_pixels`` leaves the pixel data unread, so a mammogram costs its header's few kilobytes.
What remains is pydicom parsing the header in Python, which holds the GIL, so a thread pool overlaps
only the waits for the disk: what a PACS export on a network share needs. On the project's shared
2-core machine threads were 1.0-1.7x one worker, and a process pool slower than one worker even at 800
files (starting it costs about a second there; docs/results/bench_import_headers.md). ``specific_tags``
is not used: pydicom still walks every element with it, and it measured slower than converting only
the values read.
Patient names are never read.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.errors import InvalidDicomError

from medseg_weak.errors import ConfigError

#: What the importers use: identity, side and view, and the fields a domain can be made of.
KEYWORDS: tuple[str, ...] = (
    "SOPInstanceUID",
    "StudyInstanceUID",
    "AccessionNumber",
    "PatientID",
    "ImageLaterality",
    "Laterality",
    "ViewPosition",
    "Manufacturer",
    "ManufacturerModelName",
    "InstitutionName",
    "Modality",
)


@dataclass(frozen=True)
class Header:
    """One file's header values (empty string when absent), or why it could not be read."""

    path: Path
    values: dict[str, str]
    error: str = ""

    def get(self, keyword: str) -> str:
        return self.values.get(keyword, "")

    @property
    def laterality(self) -> str:
        side = (self.get("ImageLaterality") or self.get("Laterality")).upper()
        return side if side in ("L", "R") else ""


def check_keywords(keywords: Iterable[str], option: str) -> None:
    """A typo in a DICOM keyword would silently give empty values; refuse it instead."""
    unknown = [k for k in keywords if tag_for_keyword(k) is None]
    if unknown:
        raise ConfigError(f"{option}: not a DICOM keyword: {', '.join(unknown)} (e.g. InstitutionName)")


def read_header(path: Path, keywords: Sequence[str] = KEYWORDS) -> Header:
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError, KeyError, TypeError, EOFError) as err:
        return Header(path, {}, f"{type(err).__name__}: {err}")
    values = {}
    for keyword in keywords:
        value = ds.get(keyword)
        values[keyword] = "" if value is None else str(value).strip()
    return Header(path, values)


def read_headers(paths: Sequence[Path], keywords: Sequence[str] = KEYWORDS, workers: int = 4) -> list[Header]:
    """Headers in the order of ``paths``; unreadable files come back with ``error`` set, not raised."""
    read = partial(read_header, keywords=tuple(keywords))
    if workers <= 1 or len(paths) < 2:
        return [read(p) for p in paths]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(read, paths))
