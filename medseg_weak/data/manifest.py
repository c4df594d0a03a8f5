"""The manifest: one CSV row per image, validated as a whole so that every bad row is reported at once."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from medseg_weak.errors import InputError, ManifestError
from medseg_weak.io_utils import atomic_write_text

DENSITY_LABELS: tuple[str, ...] = ("A", "B", "C", "D")
QUALITY_LABELS: tuple[str, ...] = ("Good", "Usable", "Reject")
KNOWN_LABEL_SETS: dict[str, tuple[str, ...]] = {"density": DENSITY_LABELS, "quality": QUALITY_LABELS}

REQUIRED_COLUMNS: tuple[str, ...] = ("id", "path", "label", "domain", "patient_id")
OPTIONAL_COLUMNS: tuple[str, ...] = ("mask_path", "laterality", "view", "split")
#: Kept for analysis only, never read by a stage, and written only when some record has a value:
#: ``label_true`` is the clean label of a benchmark generated with reader noise (``synth.label_noise``).
ANALYSIS_COLUMNS: tuple[str, ...] = ("label_true",)
SPLITS: tuple[str, ...] = ("train", "val", "test")


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
    label_true: str = ""


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
    names = [
        f.name
        for f in fields(Record)
        if f.name not in ANALYSIS_COLUMNS or any(getattr(r, f.name) for r in records)
    ]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=names, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for record in records:
        writer.writerow(asdict(record))
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
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "manifest not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(path, f"cannot read manifest ({err})") from err
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise InputError(
            path, f"missing column(s) {', '.join(missing)}; found: {', '.join(header) or 'none'}"
        )
    unknown = [c for c in header if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS + ANALYSIS_COLUMNS]
    if unknown:
        raise InputError(
            path,
            f"unknown column(s) {', '.join(unknown)}; "
            f"valid: {', '.join(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)}",
        )

    rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    if not rows:
        raise InputError(path, "manifest has no rows")
    valid = tuple(labels) if labels is not None else infer_labels({r["label"] for r in rows})
    records, problems = _validate_rows(rows, valid, path.parent, check_files)
    if problems:
        raise ManifestError(path, problems)
    return Manifest(records=tuple(records), root=path.parent, labels=valid, source=path)


def _validate_rows(
    rows: list[dict[str, str]], labels: tuple[str, ...], root: Path, check_files: bool
) -> tuple[list[Record], list[str]]:
    problems: list[str] = []
    records: list[Record] = []
    seen: dict[str, int] = {}
    patient_splits: dict[str, dict[str, int]] = {}
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        where = f"line {line}"
        for column in REQUIRED_COLUMNS:
            if not row.get(column):
                problems.append(f"{where}: empty '{column}'")
        rid = row.get("id", "")
        if rid:
            if rid in seen:
                problems.append(f"{where}: duplicate id '{rid}' (first on line {seen[rid]})")
            else:
                seen[rid] = line
        label = row.get("label", "")
        if label and label not in labels:
            problems.append(f"{where}: unknown label '{label}' (valid: {', '.join(labels)})")
        split = row.get("split", "")
        if split and split not in SPLITS:
            problems.append(f"{where}: unknown split '{split}' (valid: {', '.join(SPLITS)})")
        laterality = row.get("laterality", "")
        if laterality and laterality not in ("L", "R"):
            problems.append(f"{where}: laterality '{laterality}' must be L or R")
        if check_files:
            for column in ("path", "mask_path"):
                value = row.get(column, "")
                if value and not (root / value).is_file():
                    problems.append(f"{where}: {column} file not found: {value}")
        if row.get("patient_id") and split:
            patient_splits.setdefault(row["patient_id"], {}).setdefault(split, line)
        known = {k: v for k, v in row.items() if k in REQUIRED_COLUMNS + OPTIONAL_COLUMNS + ANALYSIS_COLUMNS}
        records.append(Record(**known))
    for patient, splits in patient_splits.items():
        if len(splits) > 1:
            where = ", ".join(f"{s} (line {ln})" for s, ln in sorted(splits.items(), key=lambda kv: kv[1]))
            problems.append(f"patient '{patient}' is in more than one split: {where}")
    if all(r.split for r in records) and records:
        for domain in sorted({r.domain for r in records}):
            have = {r.split for r in records if r.domain == domain}
            if "train" not in have and "test" not in have:
                problems.append(f"hospital '{domain}' has no train or test images")
    return records, problems
