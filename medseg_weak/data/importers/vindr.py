"""VinDr-Mammo (PhysioNet): ``breast-level_annotations.csv`` + ``images/<study_id>/<image_id>.dicom``.

Density is written "DENSITY A".."DENSITY D"; the official split ("training"/"test") is kept as
train/test. The domain is the scanner model, from ``metadata.csv`` when it lists the image and from
the DICOM header otherwise. VinDr publishes no patient ids: one study is one patient here.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from medseg_weak.data.importers.base import CsvTable, ImportContext, Imported, laterality, map_value, read_csv
from medseg_weak.data.importers.dicom_headers import read_headers
from medseg_weak.data.manifest import DENSITY_LABELS, Record

ANNOTATIONS = "breast-level_annotations.csv"
_COLUMNS = ("study_id", "series_id", "image_id", "laterality", "view_position", "breast_density", "split")
DENSITY = {f"DENSITY {label}": label for label in DENSITY_LABELS}
SPLITS = {"training": "train", "test": "test"}
# metadata.csv copies DICOM attribute names; both spellings are seen in circulated copies.
_META_ID = ("SOP Instance UID", "SOPInstanceUID", "image_id")
_META_MODEL = ("Manufacturer's Model Name", "ManufacturerModelName")


def import_vindr(ctx: ImportContext) -> Imported:
    """VinDr-Mammo: breast-level_annotations.csv, images/<study>/<image>.dicom; domain = scanner model"""
    table = read_csv(ctx.option_path(ctx.source / ANNOTATIONS), _COLUMNS)
    records = []
    for line, row in enumerate(table.rows, start=2):
        ctx.rows_read += 1
        where = f"line {line} (image {row['image_id']})"
        label = map_value(ctx, row["breast_density"], DENSITY, "breast_density", where)
        split = map_value(ctx, row["split"], SPLITS, "split", where)
        if label is None or split is None:
            continue
        records.append(
            Record(
                id=row["image_id"],
                path=str(ctx.source / "images" / row["study_id"] / f"{row['image_id']}.dicom"),
                label=label,
                domain="",
                patient_id=row["study_id"],
                laterality=laterality(row["laterality"]),
                view=row["view_position"],
                split=split,
            )
        )
    ctx.note_unused(table, _COLUMNS)
    ctx.notes.append("patient_id = study_id (VinDr-Mammo publishes no patient ids)")
    return Imported(with_scanner_domains(ctx, records, table.path.parent / "metadata.csv"), DENSITY_LABELS)


def with_scanner_domains(
    ctx: ImportContext, records: list[Record], metadata: Path, headers: bool = True
) -> list[Record]:
    """Set each record's domain to its scanner model: metadata.csv first, the DICOM header for the rest.

    ``headers=False`` for images that are not DICOM (the dense-mask subset's JPGs).
    """
    models = _models_from_metadata(read_csv(metadata)) if metadata.is_file() else {}
    from_table = sum(1 for r in records if r.id in models)
    need_header = [r for r in records if headers and r.id not in models and Path(r.path).is_file()]
    headers = read_headers(
        [Path(r.path) for r in need_header], ("ManufacturerModelName",), ctx.options.workers
    )
    models.update((r.id, h.get("ManufacturerModelName")) for r, h in zip(need_header, headers))
    ctx.notes.append(
        f"domain = scanner model: {from_table} from {metadata.name}, {len(need_header)} from DICOM headers"
    )
    out = []
    for record in records:
        model = models.get(record.id, "")
        if not model and Path(record.path).is_file():
            ctx.warnings.add("no scanner model (domain 'unknown')", record.id)
        out.append(replace(record, domain=model or "unknown"))
    return out


def _models_from_metadata(table: CsvTable) -> dict[str, str]:
    key, model = table.column(*_META_ID), table.column(*_META_MODEL)
    return {row[key]: row[model] for row in table.rows if row[key] and row[model]}
