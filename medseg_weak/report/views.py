"""Tables as the page shows them: a header and rows of cells, each with its text and a sort key.

Result tables come from the CSVs that ``medseg_weak.tables.Table`` writes (``<column>_mean``, ``_se``,
``_n``, ``_std`` per column), so the page shows the same numbers as the Markdown files, with the
standard error and the image count in every cell.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medseg_weak.errors import InputError

_STATS = ("mean", "se", "n", "std")


@dataclass(frozen=True)
class Cell:
    text: str
    key: str | float  # what the inline script sorts by: numbers numerically, text alphabetically
    title: str = ""  # tooltip: e.g. the standard deviation


@dataclass(frozen=True)
class TableView:
    title: str
    header: list[str]
    rows: list[list[Cell]] = field(default_factory=list)
    note: str = ""


def cell(value: Any, digits: int = 3) -> Cell:
    """A plain value: numbers formatted to ``digits`` (NaN and None shown as '-', sorted last)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return Cell("-", "")
    if isinstance(value, bool):
        return Cell(str(value).lower(), str(value))
    if isinstance(value, int):
        return Cell(str(value), float(value))
    if isinstance(value, float):
        return Cell(f"{value:.{digits}f}", value)
    return Cell(str(value), str(value))


def stat_cell(mean: float, se: float, n: int, std: float = math.nan, digits: int = 3) -> Cell:
    """``mean ± SE (n)``; sorted by the mean."""
    if n == 0 or math.isnan(mean):
        return Cell("-", "")
    text = f"{mean:.{digits}f}" if n == 1 else f"{mean:.{digits}f} ± {se:.{digits}f}"
    return Cell(f"{text} (n={n})", mean, "" if math.isnan(std) else f"sd {std:.{digits}f}")


def read_result_table(path: Path, title: str, digits: int = 3) -> TableView:
    """A ``Table`` CSV: a row per method (or metric), a column per hospital or class."""
    try:
        with path.open(newline="") as f:
            records = list(csv.DictReader(f))
    except OSError as err:
        raise InputError(path, f"cannot read the table ({err})") from None
    if not records:
        return TableView(title, [])
    fields = [k for k in records[0] if k != "row"]
    columns = list(dict.fromkeys(k.rsplit("_", 1)[0] for k in fields if k.rsplit("_", 1)[-1] in _STATS))
    rows = []
    for record in records:
        cells = [Cell(record["row"], record["row"])]
        for c in columns:
            mean, se, n, std = (_number(record, f"{c}_{stat}") for stat in _STATS)
            cells.append(stat_cell(mean, se, 0 if math.isnan(n) else int(n), std, digits))
        rows.append(cells)
    return TableView(title, ["", *columns], rows)


def _number(record: dict[str, str], key: str) -> float:
    text = record.get(key, "")
    return float(text) if text not in ("", None) else math.nan


def plain_table(
    title: str, header: Sequence[str], rows: Sequence[Sequence[Any]], note: str = ""
) -> TableView:
    return TableView(title, list(header), [[cell(v) for v in row] for row in rows], note)


@dataclass(frozen=True)
class Figure:
    src: str  # relative to the page
    caption: str


@dataclass(frozen=True)
class Facts:
    """Name: value pairs (a definition list)."""

    items: list[tuple[str, str]]


@dataclass(frozen=True)
class Code:
    """Preformatted text (a command, a config); ``folded`` hides it behind a summary line."""

    title: str
    text: str
    folded: bool = False


@dataclass(frozen=True)
class Links:
    title: str
    items: list[tuple[str, str]]  # (text, href relative to the page)


@dataclass(frozen=True)
class Section:
    """One part of the page; ``blocks`` are TableView, Figure, Facts, Code, Links or a Gallery."""

    id: str
    title: str
    blocks: list[Any]
    intro: str = ""
