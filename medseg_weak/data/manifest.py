"""The manifest: one CSV row per image, validated as a whole so that every bad row is reported at once.

Columns beyond the schema (a real export carries age, scanner, reader scores, ``label_true``, ...) are
kept per record in ``Record.extra`` and written back, so that tables can group by them; only a name
that looks like a misspelt schema column (``patient_Id``, ``mask path``) is worth a warning.
"""

from __future__ import annotations

import csv
import difflib
import io
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from medseg_weak.errors import InputError, ManifestError
from medseg_weak.io_utils import atomic_write_text

_log = logging.getLogger(__name__)

DENSITY_LABELS: tuple[str, ...] = ("A", "B", "C", "D")
QUALITY_LABELS: tuple[str, ...] = ("Good", "Usable", "Reject")
KNOWN_LABEL_SETS: dict[str, tuple[str, ...]] = {"density": DENSITY_LABELS, "quality": QUALITY_LABELS}

REQUIRED_COLUMNS: tuple[str, ...] = ("id", "path", "label", "domain", "patient_id")
OPTIONAL_COLUMNS: tuple[str, ...] = ("mask_path", "laterality", "view", "split")
#: Kept for analysis only, never read by a stage, and written only when some record has a value:
#: ``label_true`` is the clean label of a benchmark generated with reader noise (``synth.label_noise``).
ANALYSIS_COLUMNS: tuple[str, ...] = ("label_true",)
SPLITS: tuple[str, ...] = ("train", "val", "test")
COLUMNS: tuple[str, ...] = REQUIRED_COLUMNS + OPTIONAL_COLUMNS + ANALYSIS_COLUMNS


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a data set; ``data check`` groups them by ``kind`` and writes them to CSV.

    ``id`` is the image's id and ``path`` the file as written in the manifest (relative to its folder),
    both empty when the problem is not about one image (a patient in two splits).
    """

    kind: str
    message: str
    id: str = ""
    path: str = ""

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Record:
    """One image. ``path``/``mask_path`` are as written in the CSV: relative to the manifest's folder."""

    id: str
    path: str
    label: str
    domain: str
    patient_id: str
    mask_path: str = ""
    laterality: str = ""
    view: str = ""
    split: str = ""
    label_true: str = ""  # the clean label behind a noisy one (built-in benchmark), for analysis only
    # Columns outside the schema, by name. Not hashed (a dict cannot be), still compared.
    extra: dict[str, str] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Manifest:
    """Validated records plus the folder their relative paths start from."""

    records: tuple[Record, ...]
    root: Path
    labels: tuple[str, ...]
    source: Path | None = None

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self):
        return iter(self.records)

    def image_path(self, record: Record) -> Path:
        return self.root / record.path

    def mask_path(self, record: Record) -> Path | None:
        return self.root / record.mask_path if record.mask_path else None

    @property
    def domains(self) -> list[str]:
        return sorted({r.domain for r in self.records})

    def label_index(self, record: Record) -> int:
        return self.labels.index(record.label)

    def subset(self, records: Iterable[Record]) -> Manifest:
        return replace(self, records=tuple(records))

    def with_splits(self, split_of: dict[str, str]) -> Manifest:
        """A copy whose records carry the split named for their id in ``split_of``."""
        return self.subset(replace(r, split=split_of.get(r.id, r.split)) for r in self.records)


def manifest_to_csv(records: Sequence[Record]) -> str:
    """The schema's columns (analysis columns only when a record has one), then every extra column in
    the order the records first name them."""
    names = [c for c in COLUMNS if c not in ANALYSIS_COLUMNS or any(getattr(r, c) for r in records)]
    extras = list(dict.fromkeys(name for record in records for name in record.extra))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[*names, *extras], restval="", lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({**{name: getattr(record, name) for name in names}, **record.extra})
    return buf.getvalue()


def write_manifest(records: Sequence[Record], path: str | Path) -> Path:
    """Write atomically, so that a killed run never leaves a manifest listing half the images."""
    return atomic_write_text(Path(path), manifest_to_csv(records))


def infer_labels(found: set[str]) -> tuple[str, ...]:
    """The known label set that covers the labels found (density or quality), else the best overlap."""
    for labels in KNOWN_LABEL_SETS.values():
        if found <= set(labels):
            return labels
    return max(KNOWN_LABEL_SETS.values(), key=lambda labels: len(found & set(labels)))


def load_manifest(
    path: str | Path,
    labels: Sequence[str] | None = None,
    check_files: bool = True,
) -> Manifest:
    """Read and validate a manifest; raise :class:`ManifestError` listing every problem found.

    ``labels`` fixes the valid label names (in class-index order); by default the known set
    (BI-RADS density A-D or fundus quality Good/Usable/Reject) that covers the file is used.
    """
    manifest, problems = read_manifest(path, labels, check_files)
    if problems:
        raise ManifestError(manifest.source or Path(path), [str(p) for p in problems])
    return manifest


def read_manifest(
    path: str | Path,
    labels: Sequence[str] | None = None,
    check_files: bool = True,
) -> tuple[Manifest, list[Problem]]:
    """Every record (bad rows too) and every problem, for callers that report rather than stop.

    Only a file that is not a usable table at all (missing, unreadable, no rows, a required column
    missing) raises :class:`InputError`: its rows cannot be checked one by one.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "manifest not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(path, f"cannot read manifest ({err})") from err
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in (reader.fieldnames or [])]
    _check_header(path, header)
    rows = [_clean_row(row) for row in reader]
    if not rows:
        raise InputError(path, "manifest has no rows")
    valid = tuple(labels) if labels is not None else infer_labels({row["label"] for row, _ in rows})
    records, problems = _validate_rows(rows, valid, path.parent, check_files)
    return Manifest(records=tuple(records), root=path.parent, labels=valid, source=path), problems


def _normalised(name: str) -> str:
    return name.lower().replace("_", "").replace(" ", "").replace("-", "")


def looks_like_column(name: str) -> str | None:
    """The schema column ``name`` is probably a misspelling of (case, spaces, underscores, or close)."""
    if name in COLUMNS:
        return None
    for column in COLUMNS:
        if _normalised(column) == _normalised(name):
            return column
    # 0.8, not difflib's 0.6: 'label_true' (0.67 from 'label') is a real column, 'views' (0.89) a typo.
    close = difflib.get_close_matches(name.lower(), COLUMNS, n=1, cutoff=0.8)
    return close[0] if close else None


def _check_header(path: Path, header: list[str]) -> None:
    doubled = sorted({h for h in header if h and header.count(h) > 1})
    if doubled:
        raise InputError(path, f"column(s) {', '.join(doubled)} appear more than once in the header")
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        hints = [f"'{h}' (did you mean '{looks_like_column(h)}'?)" for h in header if looks_like_column(h)]
        hint = f"; {', '.join(hints)}" if hints else ""
        raise InputError(
            path, f"missing column(s) {', '.join(missing)}; found: {', '.join(header) or 'none'}{hint}"
        )
    for name in header:
        known = looks_like_column(name)
        if known is not None:
            _log.warning("%s: column '%s' is kept as extra metadata; did you mean '%s'?", path, name, known)


def _clean_row(row: dict[str | None, str | list[str] | None]) -> tuple[dict[str, str], list[str]]:
    """Stripped names and values, and the values beyond the header (``csv`` files them under ``None``)."""
    overflow = row.get(None) or []
    clean = {
        k.strip(): (v or "").strip() for k, v in row.items() if k is not None and isinstance(v, str | None)
    }
    return clean, [v for v in overflow if v.strip()]  # type: ignore[union-attr]


def _validate_rows(
    rows: list[tuple[dict[str, str], list[str]]], labels: tuple[str, ...], root: Path, check_files: bool
) -> tuple[list[Record], list[Problem]]:
    problems: list[Problem] = []
    records: list[Record] = []
    seen: dict[str, int] = {}
    patient_splits: dict[str, dict[str, int]] = {}
    for line, (row, overflow) in enumerate(rows, start=2):  # line 1 is the header
        where, rid = f"line {line}", row.get("id", "")

        def problem(kind: str, message: str, path: str = "") -> None:
            problems.append(Problem(kind, f"{where}: {message}", rid, path))  # noqa: B023 (called at once)

        if overflow:
            problem("extra_values", f"{len(overflow)} value(s) beyond the header's columns: {overflow}")
        for column in REQUIRED_COLUMNS:
            if not row.get(column):
                problem("empty_value", f"empty '{column}'")
        if rid:
            if rid in seen:
                problem("duplicate_id", f"duplicate id '{rid}' (first on line {seen[rid]})")
            else:
                seen[rid] = line
        label = row.get("label", "")
        if label and label not in labels:
            problem("unknown_label", f"unknown label '{label}' (valid: {', '.join(labels)})")
        split = row.get("split", "")
        if split and split not in SPLITS:
            problem("unknown_split", f"unknown split '{split}' (valid: {', '.join(SPLITS)})")
        laterality = row.get("laterality", "")
        if laterality and laterality not in ("L", "R"):
            problem("bad_laterality", f"laterality '{laterality}' must be L or R")
        if check_files:
            for column in ("path", "mask_path"):
                value = row.get(column, "")
                if value and not (root / value).is_file():
                    problem("missing_file", f"{column} file not found: {value}", value)
        if row.get("patient_id") and split:
            patient_splits.setdefault(row["patient_id"], {}).setdefault(split, line)
        extra = {k: v for k, v in row.items() if k not in COLUMNS and k}
        records.append(Record(**{k: v for k, v in row.items() if k in COLUMNS}, extra=extra))
    for patient, splits in patient_splits.items():
        if len(splits) > 1:
            where = ", ".join(f"{s} (line {ln})" for s, ln in sorted(splits.items(), key=lambda kv: kv[1]))
            message = f"patient '{patient}' is in more than one split: {where}"
            problems.append(Problem("patient_in_two_splits", message))
    if all(r.split for r in records) and records:
        for domain in sorted({r.domain for r in records}):
            have = {r.split for r in records if r.domain == domain}
            if "train" not in have and "test" not in have:
                message = f"hospital '{domain}' has no train or test images"
                problems.append(Problem("hospital_without_train_or_test", message))
    return records, problems
