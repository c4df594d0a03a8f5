"""Importers: a public dataset's own layout (or a DICOM folder, or any CSV) -> ``manifest.csv``.

One file per format and one registration line below; ``medseg-weak data import FORMAT`` offers
whatever is registered. :func:`import_dataset` runs one and writes ``manifest.csv`` and
``import_report.md`` under ``out``.
"""

from __future__ import annotations

from pathlib import Path

from medseg_weak.data.importers.base import ImportContext, Importer, ImportOptions
from medseg_weak.data.importers.cbis_ddsm import import_cbis_ddsm
from medseg_weak.data.importers.csv_mapping import import_csv
from medseg_weak.data.importers.dicom_folder import import_dicom_folder
from medseg_weak.data.importers.embed import import_embed
from medseg_weak.data.importers.eyeq import import_eyeq
from medseg_weak.data.importers.output import ImportResult, finish
from medseg_weak.data.importers.rsna import import_rsna
from medseg_weak.data.importers.vindr import import_vindr
from medseg_weak.data.importers.vindr_dense_masks import import_vindr_dense_masks
from medseg_weak.errors import ConfigError, InputError
from medseg_weak.registry import Registry

__all__ = ["IMPORTERS", "ImportOptions", "ImportResult", "describe", "import_dataset"]

IMPORTERS: Registry[Importer] = Registry("import format")
IMPORTERS.register("rsna")(import_rsna)
IMPORTERS.register("vindr")(import_vindr)
IMPORTERS.register("vindr_dense_masks")(import_vindr_dense_masks)
IMPORTERS.register("cbis_ddsm")(import_cbis_ddsm)
IMPORTERS.register("embed")(import_embed)
IMPORTERS.register("eyeq")(import_eyeq)
IMPORTERS.register("csv")(import_csv)
IMPORTERS.register("dicom_folder")(import_dicom_folder)

_OPTION_FLAGS = {"csv": "--csv", "columns": "--columns", "domain_by": "--domain-by"}


def describe(fmt: str) -> str:
    """The format's one-line summary (its importer's docstring), for ``--help``."""
    return (IMPORTERS.get(fmt).__doc__ or "").strip().splitlines()[0]


def import_dataset(
    fmt: str,
    source: str | Path,
    out: str | Path,
    *,
    csv: str | Path | None = None,
    columns: str | Path | None = None,
    domain_by: str | None = None,
    workers: int = ImportOptions.workers,
) -> ImportResult:
    """Import ``source`` (laid out as format ``fmt``) into ``out/manifest.csv`` + ``out/import_report.md``.

    Rows that cannot be used (no label, a label outside the map, a missing image, one id with
    conflicting values) are dropped, counted and listed in the report; a CSV lacking a needed column,
    an option the format does not take, or an import that keeps nothing raises instead.
    """
    importer = IMPORTERS.get(fmt)
    source = Path(source)
    if not source.is_dir():
        raise InputError(source, "source folder not found")
    if workers < 1:
        raise ConfigError(f"workers must be at least 1; got {workers}")
    options = ImportOptions(
        csv=Path(csv) if csv is not None else None,
        columns=Path(columns) if columns is not None else None,
        domain_by=domain_by,
        workers=workers,
    )
    ctx = ImportContext(source=source, out=Path(out), options=options)
    imported = importer(ctx)
    given = {name for name in _OPTION_FLAGS if getattr(options, name) is not None}
    ignored = [_OPTION_FLAGS[name] for name in sorted(given - ctx.consulted)]
    if ignored:
        raise ConfigError(f"format '{fmt}' does not take {', '.join(ignored)}")
    return finish(fmt, ctx, imported)
