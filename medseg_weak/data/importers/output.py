"""Turn an importer's records into ``manifest.csv`` and ``import_report.md``, the same way for every format.

Here, not in each importer: images that are not on disk (counted and listed, never a crash), one id
on several rows (merged when they agree, dropped when they conflict), paths made relative to the
manifest's folder, and the manifest validated like any other before it replaces an old one.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, fields, replace
from pathlib import Path

from medseg_weak.data.importers.base import ImportContext, Imported, Tally
from medseg_weak.data.manifest import Record, load_manifest, write_manifest
from medseg_weak.errors import InputError, ManifestError
from medseg_weak.io_utils import atomic_write, atomic_write_text

_IDENTITY = tuple(f.name for f in fields(Record) if f.name not in ("id", "path", "mask_path"))


@dataclass(frozen=True)
class ImportResult:
    """What an import wrote and the counts its report gives."""

    format: str
    manifest: Path
    report: Path
    rows_read: int
    records: tuple[Record, ...]
    labels: tuple[str, ...]
    dropped: dict[str, int]
    warnings: dict[str, int]

    @property
    def kept(self) -> int:
        return len(self.records)

    def by_domain_label(self) -> dict[str, Counter[str]]:
        table: dict[str, Counter[str]] = {}
        for record in self.records:
            table.setdefault(record.domain, Counter())[record.label] += 1
        return dict(sorted(table.items()))


def finish(fmt: str, ctx: ImportContext, imported: Imported) -> ImportResult:
    """Check files and ids, write the report, then the manifest (only if at least one image is kept)."""
    records = _deduplicate(ctx, _existing(ctx, imported.records))
    records = [_relative(r, ctx.out) for r in records]
    ctx.out.mkdir(parents=True, exist_ok=True)
    result = ImportResult(
        format=fmt,
        manifest=ctx.out / "manifest.csv",
        report=ctx.out / "import_report.md",
        rows_read=ctx.rows_read,
        records=tuple(records),
        labels=imported.labels,
        dropped=dict(ctx.drops.counts),
        warnings=dict(ctx.warnings.counts),
    )
    if not records:
        atomic_write_text(result.report, render_report(result, ctx))
        raise InputError(
            ctx.source,
            f"no image kept out of {ctx.rows_read} row(s) read ({_summary(ctx.drops)}); see {result.report}",
        )
    try:
        _write_checked(records, result.manifest, imported.labels)
    except ManifestError as err:
        shown = "; ".join(err.problems[:5])
        ctx.notes.append(f"**manifest not written**: {len(err.problems)} problem(s), e.g. {shown}")
        raise
    finally:
        atomic_write_text(result.report, render_report(result, ctx))
    return result


def _existing(ctx: ImportContext, records: list[Record]) -> list[Record]:
    kept = []
    for record in records:
        if not Path(record.path).is_file():
            ctx.drops.add("image file not found", f"{record.id}: {record.path}")
            continue
        if record.mask_path and not Path(record.mask_path).is_file():
            ctx.warnings.add(
                "mask file not found (image kept without a mask)", f"{record.id}: {record.mask_path}"
            )
            record = replace(record, mask_path="")
        kept.append(record)
    return kept


def _deduplicate(ctx: ImportContext, records: list[Record]) -> list[Record]:
    """One row per id: identical repeats (CBIS-DDSM lists an image once per lesion) merge; conflicts drop."""
    groups: dict[str, list[Record]] = {}
    for record in records:
        groups.setdefault(record.id, []).append(record)
    kept = []
    for rid, group in groups.items():
        first = group[0]
        differ = [k for k in _IDENTITY if any(getattr(r, k) != getattr(first, k) for r in group[1:])]
        if differ:
            for _ in group:
                ctx.drops.add(
                    "one id with conflicting values (every copy dropped)", f"{rid}: {', '.join(differ)}"
                )
            continue
        for _ in group[1:]:
            ctx.warnings.add("same image on several rows (kept once)", rid)
        kept.append(first)
    return kept


def _relative(record: Record, out: Path) -> Record:
    """Paths relative to the manifest's folder, as the manifest format wants (POSIX separators)."""

    def rel(path: str) -> str:
        return Path(os.path.relpath(Path(path).resolve(), out.resolve())).as_posix() if path else ""

    return replace(record, path=rel(record.path), mask_path=rel(record.mask_path))


def _write_checked(records: list[Record], path: Path, labels: tuple[str, ...]) -> None:
    """Validate the new manifest before it replaces the old one: a rejected import leaves no manifest."""

    def write(tmp: Path) -> None:
        write_manifest(records, tmp)
        try:
            load_manifest(tmp, labels=labels, check_files=True)
        except ManifestError as err:
            raise ManifestError(path, err.problems) from None

    atomic_write(path, write)


def _summary(tally: Tally) -> str:
    return "; ".join(f"{reason}: {n}" for reason, n in tally.counts.most_common()) or "nothing dropped"


def render_report(result: ImportResult, ctx: ImportContext) -> str:
    """``import_report.md``: rows read, kept and dropped (why, with examples), images per domain x label."""
    lines = [
        f"# Import report: {result.format}",
        "",
        f"- source: `{ctx.source}`",
        *(f"- {name}: `{value}`" for name, value in _options(ctx).items()),
        f"- rows read: {result.rows_read}",
        f"- images kept: {result.kept}",
        f"- rows dropped: {ctx.drops.total}",
        "",
    ]
    for title, tally in (("Dropped", ctx.drops), ("Kept, with a problem", ctx.warnings)):
        if tally.total:
            lines += [f"## {title}", "", "| reason | count | first examples |", "|---|---:|---|"]
            for reason, count in tally.counts.most_common():
                shown = "; ".join(tally.examples[reason]).replace("|", "\\|")
                lines.append(f"| {reason} | {count} | {shown} |")
            lines.append("")
    table = result.by_domain_label()
    if table:
        labels = list(result.labels)
        lines += ["## Images per domain x label", "", "| domain | " + " | ".join(labels) + " | total |"]
        lines.append("|---|" + "---:|" * (len(labels) + 1))
        for domain, counts in table.items():
            cells = [str(counts.get(label, 0)) for label in labels]
            lines.append(f"| {domain} | " + " | ".join(cells) + f" | {sum(counts.values())} |")
        lines.append("")
    if ctx.notes:
        lines += ["## Notes", "", *(f"- {note}" for note in ctx.notes), ""]
    return "\n".join(lines)


def _options(ctx: ImportContext) -> dict[str, str]:
    given = {
        "--csv": ctx.options.csv,
        "--columns": ctx.options.columns,
        "--domain-by": ctx.options.domain_by,
    }
    return {k: str(v) for k, v in given.items() if v is not None}
