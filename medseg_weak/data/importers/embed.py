"""EMBED (Emory, AWS Open Data): the clinical table (density per exam) joined to the per-file metadata.

``tissueden`` 1-4 is BI-RADS A-D (5, "normal male", is outside the map). The clinical table has one
row per finding, so an exam's density is repeated; an exam whose rows disagree is dropped. Only
full-field 2D images are kept (C-view and spot/magnification views are counted and dropped).
``anon_dicom_path`` records the path on Emory's machines; the ``cohort/patient/study/file.dcm`` tail
is looked for under ``--source``. The public data descriptor names no site column, so the domain is
``Manufacturer`` unless ``--domain-by`` names another metadata column (the site, where you have it).
"""

from __future__ import annotations

from pathlib import Path

from medseg_weak.data.importers.base import (
    DENSITY_BY_NUMBER,
    CsvTable,
    ImportContext,
    Imported,
    find_file,
    laterality,
    map_value,
    read_csv,
    under_source,
)
from medseg_weak.data.manifest import DENSITY_LABELS, Record
from medseg_weak.errors import InputError

_CLINICAL = ("empi_anon", "acc_anon", "tissueden")
_METADATA = (
    "empi_anon",
    "acc_anon",
    "anon_dicom_path",
    "ImageLateralityFinal",
    "ViewPosition",
    "FinalImageType",
)


def import_embed(ctx: ImportContext) -> Imported:
    """EMBED: tables/EMBED_OpenData_{clinical,metadata}.csv; tissueden 1-4; domain = --domain-by column"""
    clinical = read_csv(_table(ctx.source, "clinical"), _CLINICAL)
    metadata = read_csv(_table(ctx.source, "metadata"), _METADATA)
    domain = ctx.domain_by(metadata.header, "Manufacturer")
    density = _exam_densities(clinical)
    records = []
    for line, row in enumerate(metadata.rows, start=2):
        ctx.rows_read += 1
        where = f"{metadata.path.name} line {line}"
        if row["FinalImageType"] != "2D":
            ctx.drops.add("not a 2D image (FinalImageType)", f"{where}: {row['FinalImageType'] or 'empty'}")
            continue
        if row.get("spot_mag") == "1":
            ctx.drops.add("spot compression or magnification view", where)
            continue
        exam = row["acc_anon"]
        values = density.get(exam)
        if values is None:
            ctx.drops.add(f"exam not in {clinical.path.name}", f"{where}: {exam}")
            continue
        if len(values) > 1:
            ctx.drops.add("the exam's rows disagree on tissueden", f"{where}: {exam} {sorted(values)}")
            continue
        label = map_value(ctx, next(iter(values), ""), DENSITY_BY_NUMBER, "tissueden", f"{where}: {exam}")
        if label is None:
            continue
        written = row["anon_dicom_path"]
        candidates = under_source(ctx.source, written)
        path = find_file(candidates) or candidates[-1]
        records.append(
            Record(
                id=Path(written.replace("\\", "/")).stem,
                path=str(path),
                label=label,
                domain=row[domain] or "unknown",
                patient_id=row["empi_anon"],
                laterality=laterality(row["ImageLateralityFinal"]),
                view=row["ViewPosition"],
            )
        )
    ctx.notes.append(f"domain = metadata column '{domain}'")
    return Imported(records, DENSITY_LABELS)


def _table(source: Path, kind: str) -> Path:
    names = [f"EMBED_OpenData_{kind}.csv", f"EMBED_OpenData_{kind}_reduced.csv"]
    candidates = [folder / name for folder in (source / "tables", source) for name in names]
    found = find_file(candidates)
    if found is None:
        raise InputError(source, f"no EMBED {kind} table; looked for {', '.join(str(c) for c in candidates)}")
    return found


def _exam_densities(clinical: CsvTable) -> dict[str, set[str]]:
    """The tissueden values each exam's rows give (one row per finding repeats the exam's density)."""
    seen: dict[str, set[str]] = {}
    for row in clinical.rows:
        if row["acc_anon"]:
            seen.setdefault(row["acc_anon"], set()).update({row["tissueden"]} - {""})
    return seen
