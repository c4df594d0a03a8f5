"""The data section: images per hospital x label and per split, and the preview montages."""

from __future__ import annotations

from collections import Counter
from typing import Any

from medseg_weak.report.context import ReportContext
from medseg_weak.report.views import Figure, Section, plain_table


def build(ctx: ReportContext) -> Section | None:
    manifest = ctx.manifest
    if manifest is None:
        return None
    records, labels, domains = manifest.records, list(manifest.labels), manifest.domains
    by_label = Counter((r.domain, r.label) for r in records)
    rows = [[d, *(by_label[d, c] for c in labels), sum(by_label[d, c] for c in labels)] for d in domains]
    rows.append(["all", *(sum(by_label[d, c] for d in domains) for c in labels), len(records)])
    blocks: list[Any] = [plain_table("images per hospital and label", ["hospital", *labels, "total"], rows)]
    splits = [s for s in ("train", "val", "test") if any(r.split == s for r in records)]
    if splits:
        by_split = Counter((r.domain, r.split) for r in records)
        patients = {d: len({r.patient_id for r in records if r.domain == d}) for d in domains}
        rows = [[d, *(by_split[d, s] for s in splits), patients[d]] for d in domains]
        blocks.append(plain_table("images per hospital and split", ["hospital", *splits, "patients"], rows))
    for preview in sorted(ctx.run.root.glob("preview_*.png")):
        src = ctx.copy_figure(preview, preview.name)
        if src:
            blocks.append(Figure(src, f"{preview.name}: what the model sees, per hospital (preprocessed)"))
    masks = sum(bool(r.mask_path) for r in records)
    intro = f"{len(records)} images from {len(domains)} hospitals; {masks} with a ground-truth mask."
    return Section("data", "Data", blocks, intro)
