"""``--columns map.yaml``: which of a CSV's columns fill which manifest column, and a label value map.

Example (any CSV)::

    csv: labels.csv                 # relative to this file; --csv overrides
    columns: {id: image_id, label: density, domain: site, patient_id: patient, view: view}
    path_template: "{patient}/{image_id}.dcm"   # or columns.path; relative to --source
    labels: {"1": A, "2": B, "3": C, "4": D}    # omitted: values are taken as they are
    constants: {domain: hospital_A}             # a manifest column with one value for every row

For a DICOM folder, ``join_on`` names the header field (a DICOM keyword, or ``file`` for the path
under ``--source``) that ``columns.id`` holds in the label CSV. Keys are checked like the project
config's: a typo fails naming the dotted key.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import yaml

from medseg_weak.config import from_dict
from medseg_weak.errors import ConfigError, InputError


@dataclass(frozen=True)
class ColumnMap:
    """Manifest column -> the CSV's column name (empty: not mapped)."""

    id: str = ""
    path: str = ""
    label: str = ""
    domain: str = ""
    patient_id: str = ""
    laterality: str = ""
    view: str = ""
    split: str = ""
    mask_path: str = ""


@dataclass(frozen=True)
class Mapping:
    csv: str = ""
    columns: ColumnMap = field(default_factory=ColumnMap)
    path_template: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    constants: dict[str, str] = field(default_factory=dict)
    join_on: str = ""
    source: Path | None = None  # the YAML file it was read from (for messages and relative paths)

    def column(self, name: str) -> str:
        return getattr(self.columns, name)

    def csv_path(self, given: Path | None) -> Path | None:
        """``--csv`` when given, else ``csv:`` relative to the mapping file."""
        if given is not None:
            return given
        if self.csv and self.source is not None:
            return self.source.parent / self.csv
        return Path(self.csv) if self.csv else None

    def template_columns(self) -> list[str]:
        return [name for _, name, _, _ in string.Formatter().parse(self.path_template) if name]

    def needed(self) -> list[str]:
        """Every CSV column the mapping names, for the header check."""
        named = [getattr(self.columns, f.name) for f in fields(ColumnMap)]
        return [c for c in (*named, *self.template_columns()) if c]


def load_mapping(path: Path) -> Mapping:
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "mapping file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise InputError(path, f"cannot read mapping YAML ({err})") from err
    if isinstance(raw, dict) and "source" in raw:
        raise ConfigError(f"{path}: unknown key 'source'")
    try:
        mapping = from_dict(Mapping, raw)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    valid = {f.name for f in fields(ColumnMap)}
    unknown = sorted(set(mapping.constants) - valid)
    if unknown:
        raise ConfigError(f"{path}: unknown manifest column(s) in 'constants': {', '.join(unknown)}")
    return replace(mapping, source=path)


def require(mapping: Mapping, *names: str) -> None:
    """Each named manifest column must come from a column or a constant; say which key to set."""
    for name in names:
        if not mapping.column(name) and name not in mapping.constants:
            raise ConfigError(f"{mapping.source}: 'columns.{name}' (or 'constants.{name}') is required")
