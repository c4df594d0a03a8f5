"""What every importer shares: its options, CSVs read with the header checked, and counted drops.

An importer reads one public dataset's own layout and returns manifest records; it never writes the
manifest itself (see :mod:`medseg_weak.data.importers.output`), so that missing files, repeated ids
and the report are handled the same way for every format.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from medseg_weak.data.manifest import Record, infer_labels
from medseg_weak.errors import ConfigError, InputError

#: Drop reasons list this many examples in the report; the count is always complete.
EXAMPLES_KEPT = 10

#: BI-RADS density 1-4 (CBIS-DDSM, EMBED) as the manifest's A-D.
DENSITY_BY_NUMBER: dict[str, str] = {"1": "A", "2": "B", "3": "C", "4": "D"}


@dataclass(frozen=True)
class ImportOptions:
    """What the user can tell an importer besides the source folder (the CLI's options).

    ``csv``: the table to read instead of the dataset's default file name; ``columns``: a YAML
    mapping file (formats ``csv`` and ``dicom_folder``); ``domain_by``: which field names the
    hospital, for formats that offer a choice; ``workers``: threads reading DICOM headers.
    """

    csv: Path | None = None
    columns: Path | None = None
    domain_by: str | None = None
    workers: int = 4


@dataclass
class Tally:
    """Counts per reason with the first few examples, so a report can say 'why' without listing 50,000."""

    counts: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, example: str) -> None:
        self.counts[reason] += 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < EXAMPLES_KEPT:
            shown.append(example)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass
class ImportContext:
    """One import's inputs and its running log: rows read, rows dropped, problems that kept the row."""

    source: Path
    out: Path
    options: ImportOptions
    rows_read: int = 0
    drops: Tally = field(default_factory=Tally)
    warnings: Tally = field(default_factory=Tally)
    notes: list[str] = field(default_factory=list)
    consulted: set[str] = field(default_factory=set)  # options the importer looked at (others: error)

    def csv_given(self) -> Path | None:
        self.consulted.add("csv")
        return self.options.csv

    def option_path(self, default: Path) -> Path:
        """``--csv`` when given, else the dataset's own file name under the source folder."""
        return self.csv_given() or default

    def columns_file(self) -> Path | None:
        self.consulted.add("columns")
        return self.options.columns

    def domain_by(self, choices: Sequence[str], default: str) -> str:
        """``--domain-by``, checked against the choices this format offers."""
        self.consulted.add("domain_by")
        value = self.options.domain_by or default
        if value not in choices:
            raise ConfigError(f"--domain-by '{value}' is not offered here; valid: {', '.join(choices)}")
        return value

    def note_unused(self, table: CsvTable, used: Iterable[str]) -> None:
        """Columns the manifest has no place for go into the report, so nothing is dropped unsaid."""
        unused = table.unused(used)
        if unused:
            self.notes.append(f"`{table.path.name}` columns not in the manifest: {', '.join(unused)}")


@dataclass(frozen=True)
class Imported:
    """An importer's answer: records with absolute paths, and the label names in class order."""

    records: list[Record]
    labels: tuple[str, ...]


Importer = Callable[[ImportContext], Imported]


@dataclass(frozen=True)
class CsvTable:
    """A CSV file's rows (values stripped) with the header it was checked against."""

    path: Path
    header: tuple[str, ...]
    rows: list[dict[str, str]]

    def column(self, *spellings: str) -> str:
        """The header's name for a column that datasets spell several ways (``breast density``)."""
        for name in spellings:
            if name in self.header:
                return name
        wanted = " or ".join(f"'{s}'" for s in spellings)
        raise InputError(self.path, f"missing column {wanted}; found: {', '.join(self.header) or 'none'}")

    def unused(self, used: Iterable[str]) -> list[str]:
        return [name for name in self.header if name and name not in set(used)]


def read_csv(path: Path, required: Sequence[str | tuple[str, ...]] = ()) -> CsvTable:
    """Read a CSV and check, before any row is used, that every required column is there.

    ``required`` entries are column names, or tuples of the spellings one column goes by; all the
    missing ones are named at once, with the file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "CSV file not found")
    try:
        text = path.read_text(encoding="utf-8-sig")  # Excel exports start with a byte-order mark
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(path, f"cannot read CSV ({err})") from err
    reader = csv.DictReader(io.StringIO(text))
    header = tuple((name or "").strip() for name in (reader.fieldnames or []))
    missing = [
        " or ".join(f"'{s}'" for s in spellings)
        for spellings in (r if isinstance(r, tuple) else (r,) for r in required)
        if not any(s in header for s in spellings)
    ]
    if missing:
        raise InputError(
            path, f"missing column(s) {', '.join(missing)}; found: {', '.join(header) or 'none'}"
        )
    rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
    return CsvTable(path, header, rows)


def map_value(
    ctx: ImportContext, value: str, mapping: Mapping[str, str], what: str, where: str
) -> str | None:
    """``mapping[value]``, or None with the row counted as dropped (empty, or a value outside the map)."""
    if not value:
        ctx.drops.add(f"no {what}", where)
        return None
    mapped = mapping.get(value)
    if mapped is None:
        ctx.drops.add(f"{what} outside the map ({', '.join(mapping)})", f"{where}: '{value}'")
    return mapped


def find_file(candidates: Iterable[Path]) -> Path | None:
    """The first candidate that is a file: datasets are unpacked with and without their top folder."""
    return next((p for p in candidates if p.is_file()), None)


def under_source(source: Path, written: str, max_parts: int = 4) -> list[Path]:
    """Where a path written in a dataset's CSV may be under ``source``: the path itself, then its tails.

    Tables record paths from the machine that made them (``/mnt/NAS2/.../cohort_1/p/s/x.dcm``,
    ``s3://...``); the last few components are what a download reproduces.
    """
    parts = [p for p in written.replace("\\", "/").split("/") if p and p != "."]
    tails = [Path(*parts[-k:]) for k in range(min(max_parts, len(parts)), 0, -1)]
    return [source / written, *(source / tail for tail in tails)]


def label_order(found: Iterable[str], value_map: Mapping[str, str]) -> tuple[str, ...]:
    """Class order: a value map's labels as written; else the known set (density, quality); else sorted."""
    if value_map:
        return tuple(dict.fromkeys(value_map.values()))
    found = set(found)
    known = infer_labels(found)
    return known if found <= set(known) else tuple(sorted(found))


def laterality(value: str) -> str:
    """'L'/'R' from the spellings datasets use (L, LEFT, left); anything else is unknown ('')."""
    return {"L": "L", "LEFT": "L", "R": "R", "RIGHT": "R"}.get(value.strip().upper(), "")
