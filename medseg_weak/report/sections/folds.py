"""The leave-one-out section: the pooled held-out table, then a part per fold linking its own page."""

from __future__ import annotations

from typing import Any

from medseg_weak.report.context import ReportContext
from medseg_weak.report.sections.classifier import metrics_blocks
from medseg_weak.report.sections.segmenter import result_tables
from medseg_weak.report.views import Links, Section


def build(ctx: ReportContext) -> Section | None:
    domains = ctx.run.held_out_domains()
    if domains is None:
        return None
    blocks: list[Any] = []
    if ctx.has("eval"):
        blocks += result_tables(ctx, "eval", "pooled_")
    for domain in domains:
        fold = ctx.run.fold(domain)
        page = fold.root / "report" / "index.html"
        link = [(f"the fold's own report ({domain} held out)", f"../folds/{domain}/report/index.html")]
        blocks.append(Links(f"fold: {domain} held out", link if page.is_file() else []))
        blocks += metrics_blocks(ctx, fold.stage("classifier"), prefix=f"{domain}_")
        blocks += result_tables(ctx, f"folds/{domain}/eval", f"{domain}_")
    intro = (
        f"Each hospital held out in turn ({', '.join(domains)}); the pooled tables score every image on the "
        "fold that never saw its hospital."
    )
    return Section("leave-one-out", "Leave-one-out", blocks, intro)
