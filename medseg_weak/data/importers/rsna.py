"""RSNA Screening Mammography (Kaggle 2022): ``train.csv`` + ``train_images/<patient_id>/<image_id>.dcm``.

Density is given for only part of the images; the rest are dropped and counted. The domain is the
site (2 in the public data) or, with ``--domain-by machine_id``, the scanner (about 10).
"""

from __future__ import annotations

from medseg_weak.data.importers.base import ImportContext, Imported, laterality, map_value, read_csv
from medseg_weak.data.manifest import DENSITY_LABELS, Record

_COLUMNS = ("site_id", "patient_id", "image_id", "laterality", "view", "density", "machine_id")
_DOMAIN_PREFIX = {"site_id": "site", "machine_id": "machine"}


def import_rsna(ctx: ImportContext) -> Imported:
    """RSNA Screening Mammography: train.csv, train_images/<patient>/<image>.dcm; domain site_id|machine_id"""
    table = read_csv(ctx.option_path(ctx.source / "train.csv"), _COLUMNS)
    domain_by = ctx.domain_by(tuple(_DOMAIN_PREFIX), "site_id")
    images = ctx.source / f"{table.path.stem}_images"  # train.csv -> train_images, test.csv -> test_images
    density = {label: label for label in DENSITY_LABELS}
    records = []
    for line, row in enumerate(table.rows, start=2):
        ctx.rows_read += 1
        label = map_value(ctx, row["density"], density, "density", f"line {line} (image {row['image_id']})")
        if label is None:
            continue
        records.append(
            Record(
                id=row["image_id"],
                path=str(images / row["patient_id"] / f"{row['image_id']}.dcm"),
                label=label,
                domain=f"{_DOMAIN_PREFIX[domain_by]}_{row[domain_by]}",
                patient_id=row["patient_id"],
                laterality=laterality(row["laterality"]),
                view=row["view"],
            )
        )
    ctx.notes.append(f"domain = {domain_by}")
    ctx.note_unused(table, _COLUMNS)
    return Imported(records, DENSITY_LABELS)
