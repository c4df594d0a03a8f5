"""A folder of DICOMs without a manifest (a PACS export): headers give the rest, a CSV gives the labels.

Every file under ``--source`` is opened headers-only (in parallel); side, view, patient and the
domain come from the tags: ``--domain-by scanner`` (Manufacturer + model, the default),
``institution`` (InstitutionName) or any DICOM keyword. Labels come from ``--csv``, joined on the
first of SOPInstanceUID, AccessionNumber, StudyInstanceUID, PatientID or ``file`` (the path under
``--source``) that the CSV has as a column, per breast when it also has a ``laterality`` column.
``--columns map.yaml`` can name the join (``join_on``, ``columns.id``), the label column and a
label value map. PatientID is copied as it is: pseudonymise the export first (docs/own-data.md).
"""

from __future__ import annotations

from medseg_weak.data.importers.base import (
    CsvTable,
    ImportContext,
    Imported,
    label_order,
    laterality,
    read_csv,
)
from medseg_weak.data.importers.dicom_headers import KEYWORDS, Header, check_keywords, read_headers
from medseg_weak.data.importers.mapping import Mapping, load_mapping
from medseg_weak.data.manifest import Record
from medseg_weak.errors import ConfigError

JOIN_KEYS = ("SOPInstanceUID", "AccessionNumber", "StudyInstanceUID", "PatientID", "file")
DOMAINS = {"scanner": ("Manufacturer", "ManufacturerModelName"), "institution": ("InstitutionName",)}


def import_dicom_folder(ctx: ImportContext) -> Imported:
    """A folder of DICOMs: tags give side, view, patient, domain; --csv gives labels (joined on an id)"""
    csv_path = ctx.csv_given()
    if csv_path is None:
        raise ConfigError("format 'dicom_folder' needs --csv with the labels (joined on an id column)")
    columns = ctx.columns_file()
    mapping = load_mapping(columns) if columns is not None else Mapping()
    domain_fields = _domain_fields(ctx)
    table = read_csv(csv_path)
    join_on, key_column, label_column, side_column = _join(table, mapping)
    labels = _label_table(ctx, table, mapping, key_column, label_column, side_column)

    files = sorted(p for p in ctx.source.rglob("*") if p.is_file() and not p.name.startswith("."))
    keywords = tuple(dict.fromkeys((*KEYWORDS, *domain_fields)))
    records = []
    for header in read_headers(files, keywords, workers=ctx.options.workers):
        ctx.rows_read += 1
        record = _record(ctx, header, join_on, side_column, labels, domain_fields)
        if record is not None:
            records.append(record)
    ctx.notes.append(
        f"labels joined on {join_on} = {table.path.name}:{key_column}"
        + (f" and laterality = {side_column}" if side_column else "")
        + f"; domain = {' + '.join(domain_fields)}"
    )
    return Imported(records, label_order((r.label for r in records), mapping.labels))


def _domain_fields(ctx: ImportContext) -> tuple[str, ...]:
    choice = ctx.options.domain_by or "scanner"
    ctx.consulted.add("domain_by")
    fields = DOMAINS.get(choice, (choice,))
    check_keywords(fields, "--domain-by (scanner, institution or a DICOM keyword)")
    return fields


def _join(table: CsvTable, mapping: Mapping) -> tuple[str, str, str, str]:
    """(header field, CSV key column, CSV label column, CSV laterality column or '')."""
    join_on = mapping.join_on or next((k for k in JOIN_KEYS if k in table.header), "")
    if not join_on:
        raise ConfigError(
            f"{table.path}: no id column to join on; add one of {', '.join(JOIN_KEYS)} "
            "or set join_on and columns.id in --columns"
        )
    if join_on != "file":
        check_keywords([join_on], f"{mapping.source}: join_on")
    key = mapping.column("id") or join_on
    label = mapping.column("label") or "label"
    side = mapping.column("laterality") or ("laterality" if "laterality" in table.header else "")
    for column in (key, label, side):
        if column:
            table.column(column)  # names the file and the column when it is missing
    return join_on, key, label, side


def _label_table(
    ctx: ImportContext, table: CsvTable, mapping: Mapping, key: str, label: str, side: str
) -> dict[tuple[str, str], str | None]:
    """(join value, side) -> label; None where the CSV gives one image two different labels."""
    out: dict[tuple[str, str], str | None] = {}
    for line, row in enumerate(table.rows, start=2):
        value = row[label]
        if mapping.labels:
            mapped = mapping.labels.get(value)
            if mapped is None:
                where = f"{table.path.name} line {line}: '{value}'"
                ctx.warnings.add(f"label outside the map ({', '.join(mapping.labels)}); row unused", where)
                continue
            value = mapped
        if not value:
            continue
        k = (row[key], laterality(row[side]) if side else "")
        out[k] = value if out.get(k, value) == value else None
    return out


def _record(
    ctx: ImportContext,
    header: Header,
    join_on: str,
    side_column: str,
    labels: dict[tuple[str, str], str | None],
    domain_fields: tuple[str, ...],
) -> Record | None:
    name = header.path.relative_to(ctx.source).as_posix()
    if header.error:
        ctx.drops.add("not a readable DICOM file", f"{name}: {header.error}")
        return None
    if not header.get("SOPInstanceUID"):
        ctx.drops.add("not an image (no SOPInstanceUID, e.g. DICOMDIR)", name)
        return None
    if not header.get("PatientID"):
        ctx.drops.add("no PatientID", name)
        return None
    key = (name if join_on == "file" else header.get(join_on), header.laterality if side_column else "")
    if key not in labels:
        ctx.drops.add("no label row in the CSV", f"{name}: {join_on}={key[0]}")
        return None
    label = labels[key]
    if label is None:
        ctx.drops.add("the CSV gives this image two labels", f"{name}: {join_on}={key[0]}")
        return None
    domain = " ".join(header.get(f) for f in domain_fields if header.get(f))
    return Record(
        id=header.get("SOPInstanceUID"),
        path=str(header.path),
        label=label,
        domain=domain or "unknown",
        patient_id=header.get("PatientID"),
        laterality=header.laterality,
        view=header.get("ViewPosition").upper(),
    )
