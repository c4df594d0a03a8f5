"""EyeQ (fundus image quality on EyePACS): ``Label_EyeQ_{train,test}.csv`` (``image, quality``) + the JPEGs.

Quality 0/1/2 is Good/Usable/Reject. The split comes from the file (train/test). EyePACS names
images ``<patient>_<left|right>``, which gives the patient and the side; EyeQ's own preprocessing
writes PNGs under the same stem, so either suffix is found. EyePACS does not say which camera took
an image: the domain is the dataset.
"""

from __future__ import annotations

from pathlib import Path

from medseg_weak.data.importers.base import ImportContext, Imported, find_file, map_value, read_csv
from medseg_weak.data.manifest import QUALITY_LABELS, Record

QUALITY = {"0": "Good", "1": "Usable", "2": "Reject"}
_SIDES = {"left": "L", "right": "R"}
_SUFFIXES = ("", ".jpeg", ".jpg", ".png")
DOMAIN = "EyePACS"


def import_eyeq(ctx: ImportContext) -> Imported:
    """EyeQ: Label_EyeQ_train.csv / _test.csv (image, quality 0/1/2) + EyePACS images"""
    given = ctx.csv_given()
    tables = [given] if given else sorted(ctx.source.glob("Label_EyeQ_*.csv"))
    if not tables:
        tables = [ctx.source / "Label_EyeQ_train.csv"]  # named in the not-found error
    records = []
    for path in tables:
        table = read_csv(path, ("image", "quality"))
        split = next((s for s in ("train", "test") if s in table.path.stem.lower()), "")
        for line, row in enumerate(table.rows, start=2):
            ctx.rows_read += 1
            name = row["image"]
            label = map_value(
                ctx, row["quality"], QUALITY, "quality", f"{table.path.name} line {line} ({name})"
            )
            if label is None:
                continue
            stem = Path(name).stem
            patient, _, side = stem.partition("_")
            records.append(
                Record(
                    id=stem,
                    path=str(_image(ctx.source, split, name)),
                    label=label,
                    domain=DOMAIN,
                    patient_id=patient,
                    laterality=_SIDES.get(side.lower(), ""),
                    split=split,
                )
            )
        ctx.note_unused(table, ("image", "quality"))
    return Imported(records, QUALITY_LABELS)


def _image(source: Path, split: str, name: str) -> Path:
    stem = Path(name).stem
    folders = [source / split, source] if split else [source]
    candidates = [folder / name for folder in folders]
    candidates += [folder / f"{stem}{suffix}" for folder in folders for suffix in _SUFFIXES if suffix]
    return find_file(candidates) or candidates[0]
