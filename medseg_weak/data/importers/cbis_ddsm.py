"""CBIS-DDSM (TCIA): the mass and calcification case-description CSVs and the TCIA download's DICOMs.

Awkward parts handled here: the density column is ``breast_density`` in the mass files and
``breast density`` in the calc files; an image is listed once per lesion (rows merge); the CSVs'
``image file path`` names UID folders that the NBIA downloader renames, so the DICOM is looked for
under the case folder (``Mass-Training_P_00001_LEFT_CC``); and a patient can be in the mass training
set and the calc test set, which would leak a patient across the split: such patients go to test.
The domain is the dataset (the CSVs do not say which scanner digitised a film).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from medseg_weak.data.importers.base import (
    DENSITY_BY_NUMBER,
    ImportContext,
    Imported,
    find_file,
    laterality,
    map_value,
    read_csv,
)
from medseg_weak.data.manifest import DENSITY_LABELS, Record

_DENSITY = ("breast_density", "breast density")
_COLUMNS = ("patient_id", _DENSITY, "left or right breast", "image view", "image file path")
DOMAIN = "CBIS-DDSM"


def import_cbis_ddsm(ctx: ImportContext) -> Imported:
    """CBIS-DDSM: mass/calc_case_description_*.csv + the TCIA DICOM folders; density 1-4 -> A-D"""
    given = ctx.csv_given()
    tables = [given] if given else sorted(ctx.source.glob("*case_description*.csv"))
    if not tables:
        tables = [ctx.source / "mass_case_description_train_set.csv"]  # named in the not-found error
    records: list[Record] = []
    for path in tables:
        table = read_csv(path, _COLUMNS)
        density = table.column(*_DENSITY)
        for line, row in enumerate(table.rows, start=2):
            ctx.rows_read += 1
            case = row["image file path"].replace("\\", "/").split("/")[0]
            where = f"{table.path.name} line {line} ({case})"
            split = _split(case)
            if split is None:
                ctx.drops.add("case folder is neither Training nor Test", where)
                continue
            label = map_value(ctx, row[density], DENSITY_BY_NUMBER, density, where)
            if label is None:
                continue
            records.append(
                Record(
                    id=case,
                    path=str(_dicom(ctx.source, row["image file path"], case)),
                    label=label,
                    domain=DOMAIN,
                    patient_id=row["patient_id"],
                    laterality=laterality(row["left or right breast"]),
                    view=row["image view"],
                    split=split,
                )
            )
        ctx.note_unused(
            table, ("patient_id", density, "left or right breast", "image view", "image file path")
        )
    return Imported(_patients_in_one_split(ctx, records), DENSITY_LABELS)


def _split(case: str) -> str | None:
    if "-Training_" in case:
        return "train"
    if "-Test_" in case:
        return "test"
    return None


def _dicom(source: Path, written: str, case: str) -> Path:
    """The CSV's path if it exists, else the one DICOM under the case folder (TCIA renames the rest)."""
    written = written.replace("\\", "/")
    roots = [source, source / "CBIS-DDSM"]
    found = find_file(root / written for root in roots)
    if found is not None:
        return found
    for root in roots:
        dicoms = sorted((root / case).rglob("*.dcm")) if (root / case).is_dir() else []
        if len(dicoms) == 1:
            return dicoms[0]
    return source / written  # not on disk: counted as a missing image


def _patients_in_one_split(ctx: ImportContext, records: list[Record]) -> list[Record]:
    test_patients = {r.patient_id for r in records if r.split == "test"}
    out = []
    for record in records:
        if record.split == "train" and record.patient_id in test_patients:
            ctx.warnings.add("patient also in an official test set: moved to test", record.id)
            record = replace(record, split="test")
        out.append(record)
    return out
