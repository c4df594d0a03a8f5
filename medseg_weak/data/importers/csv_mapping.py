"""Any CSV, with a ``--columns map.yaml`` saying which column is which (see :mod:`.mapping`)."""

from __future__ import annotations

from medseg_weak.data.importers.base import (
    ImportContext,
    Imported,
    label_order,
    laterality,
    map_value,
    read_csv,
)
from medseg_weak.data.importers.mapping import Mapping, load_mapping, require
from medseg_weak.data.manifest import SPLITS, Record
from medseg_weak.errors import ConfigError


def import_csv(ctx: ImportContext) -> Imported:
    """Any CSV: --columns map.yaml names the id, path, label, domain and patient columns"""
    columns = ctx.columns_file()
    if columns is None:
        raise ConfigError("format 'csv' needs --columns map.yaml (which column is the id, path, label, ...)")
    mapping = load_mapping(columns)
    require(mapping, "label", "domain", "patient_id")
    if not mapping.column("id"):
        raise ConfigError(f"{mapping.source}: 'columns.id' is required")
    if not (mapping.column("path") or mapping.path_template):
        raise ConfigError(f"{mapping.source}: 'columns.path' or 'path_template' is required")
    csv_path = mapping.csv_path(ctx.csv_given())
    if csv_path is None:
        raise ConfigError(f"{mapping.source}: no CSV: set 'csv' in the mapping or pass --csv")
    table = read_csv(csv_path, mapping.needed())
    records = []
    for line, row in enumerate(table.rows, start=2):
        ctx.rows_read += 1
        record = _record(ctx, mapping, row, f"line {line}")
        if record is not None:
            records.append(record)
    ctx.note_unused(table, mapping.needed())
    return Imported(records, label_order((r.label for r in records), mapping.labels))


def _record(ctx: ImportContext, mapping: Mapping, row: dict[str, str], where: str) -> Record | None:
    def value(name: str) -> str:
        column = mapping.column(name)
        return row[column] if column else mapping.constants.get(name, "")

    label = value("label")
    if mapping.labels:
        label = map_value(ctx, label, mapping.labels, "label", where)
    elif not label:
        ctx.drops.add("no label", where)
        label = None
    split = value("split").lower()
    if split and split not in SPLITS:
        ctx.drops.add(f"split outside {', '.join(SPLITS)}", f"{where}: '{split}'")
        return None
    if label is None:
        return None
    for name in ("id", "domain", "patient_id"):
        if not value(name):
            ctx.drops.add(f"no {name}", where)
            return None
    path = row[mapping.column("path")] if mapping.column("path") else mapping.path_template.format_map(row)
    mask = value("mask_path")
    return Record(
        id=value("id"),
        path=str(ctx.source / path),
        label=label,
        domain=value("domain"),
        patient_id=value("patient_id"),
        laterality=laterality(value("laterality")),
        view=value("view").upper(),
        split=split,
        mask_path=str(ctx.source / mask) if mask else "",
    )
