"""Expert dense-tissue masks for VinDr-Mammo images (uefcancer/Mammography_dataset): JPGs in, PNG masks out.

Layout: ``images/<name>.jpg``, ``dense_masks/<name>.jpg`` (and ``breast_masks/``, which the
preprocessing does not need: it finds the breast itself). Each dense mask is thresholded into
``<out>/masks/<name>.png`` because JPEG leaves grey values along every edge.

Labels come from ``--csv``: VinDr-Mammo's ``breast-level_annotations.csv`` (BI-RADS density, study,
side, view; ``metadata.csv`` beside it gives the scanner as domain), else the subset's own
``train.csv`` (``Filename, Density``: area-based percent density), binned into A-D by the BI-RADS
4th-edition quartiles. The first is the radiologists' category; prefer it when you have VinDr.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from PIL import Image as PILImage

from medseg_weak.data.importers.base import (
    CsvTable,
    ImportContext,
    Imported,
    find_file,
    laterality,
    map_value,
    read_csv,
)
from medseg_weak.data.importers.masks import write_binary_png
from medseg_weak.data.importers.vindr import ANNOTATIONS, DENSITY, with_scanner_domains
from medseg_weak.data.manifest import DENSITY_LABELS, Record
from medseg_weak.errors import InputError

_SUFFIXES = (".jpg", ".jpeg", ".png")
#: Upper bounds (percent dense) of A, B, C; D above. BI-RADS 4th edition's quartiles.
QUARTILES = (25.0, 50.0, 75.0)


def import_vindr_dense_masks(ctx: ImportContext) -> Imported:
    """VinDr dense-tissue masks: images/, dense_masks/ JPGs; labels from VinDr's CSV or train.csv"""
    default = ctx.source / ANNOTATIONS
    table = read_csv(ctx.option_path(default if default.is_file() else ctx.source / "train.csv"))
    images = sorted(p for p in (ctx.source / "images").glob("*") if p.suffix.lower() in _SUFFIXES)
    if not images:
        raise InputError(ctx.source / "images", "no .jpg/.png images found (expected images/, dense_masks/)")
    if "breast_density" in table.header:
        label_of = _vindr_labels(ctx, table)
    else:
        label_of = _percent_labels(ctx, table)
    records = []
    for image in images:
        ctx.rows_read += 1
        record = label_of(image)
        if record is not None:
            records.append(_with_mask(ctx, record, image))
    ctx.notes.append(f"{len(images)} images in images/, {len(table.rows)} rows in {table.path.name}")
    if "breast_density" in table.header:
        records = with_scanner_domains(ctx, records, table.path.parent / "metadata.csv", headers=False)
    return Imported(records, DENSITY_LABELS)


def percent_to_label(percent: float) -> str:
    return DENSITY_LABELS[sum(percent >= bound for bound in QUARTILES)]


def _vindr_labels(ctx: ImportContext, table: CsvTable) -> Callable[[Path], Record | None]:
    for column in ("image_id", "study_id", "laterality", "view_position"):
        table.column(column)
    rows = {row["image_id"]: (line, row) for line, row in enumerate(table.rows, start=2)}
    ctx.notes.append("patient_id = study_id (VinDr-Mammo publishes no patient ids)")

    def label_of(image: Path) -> Record | None:
        if image.stem not in rows:
            ctx.drops.add(f"no row in {table.path.name}", image.name)
            return None
        line, row = rows[image.stem]
        label = map_value(
            ctx, row["breast_density"], DENSITY, "breast_density", f"line {line} ({image.name})"
        )
        if label is None:
            return None
        return Record(
            id=image.stem,
            path=str(image),
            label=label,
            domain="",
            patient_id=row["study_id"],
            laterality=laterality(row["laterality"]),
            view=row["view_position"],
        )

    return label_of


def _percent_labels(ctx: ImportContext, table: CsvTable) -> Callable[[Path], Record | None]:
    name, density = table.column("Filename"), table.column("Density")
    rows = {Path(row[name]).stem: (line, row) for line, row in enumerate(table.rows, start=2)}
    ctx.notes.append(
        f"label = percent density from {table.path.name} binned at {QUARTILES} (BI-RADS 4th edition); "
        "patient ids unknown: one patient per image; domain 'VinDr'"
    )
    numbers = [float(v) for v in (row[density] for row in table.rows) if v.replace(".", "", 1).isdigit()]
    if numbers and max(numbers) <= 1.0:  # a fraction table would silently become all 'A'
        ctx.notes.append(
            f"**every {density} value is <= 1**: read as percent; if they are fractions, rescale"
        )

    def label_of(image: Path) -> Record | None:
        if image.stem not in rows:
            ctx.drops.add(f"no row in {table.path.name}", image.name)
            return None
        line, row = rows[image.stem]
        try:
            percent = float(row[density])
        except ValueError:
            ctx.drops.add("Density is not a number", f"line {line} ({image.name}): '{row[density]}'")
            return None
        if not 0.0 <= percent <= 100.0:
            ctx.drops.add("Density outside 0-100 %", f"line {line} ({image.name}): {percent}")
            return None
        label = percent_to_label(percent)
        return Record(id=image.stem, path=str(image), label=label, domain="VinDr", patient_id=image.stem)

    return label_of


def _with_mask(ctx: ImportContext, record: Record, image: Path) -> Record:
    jpeg = find_file(ctx.source / "dense_masks" / f"{image.stem}{s}" for s in (image.suffix, *_SUFFIXES))
    if jpeg is None:
        ctx.warnings.add("no dense mask (image kept without a mask)", image.name)
        return record
    try:
        with PILImage.open(image) as img:  # the header only: the size the mask must have
            shape = (img.height, img.width)
    except OSError as err:
        ctx.warnings.add("unreadable image (kept for `data check` to report)", f"{image.name}: {err}")
        return record
    png = ctx.out / "masks" / f"{record.id}.png"
    try:
        write_binary_png(jpeg, png, shape)
    except InputError as err:
        ctx.warnings.add("unusable dense mask (image kept without a mask)", f"{image.name}: {err.reason}")
        return record
    return replace(record, mask_path=str(png))
