"""The interpretability section: faithfulness and localisation per CAM method against the random and
centre baselines, flagged methods, sanity checks, curves and galleries."""

from __future__ import annotations

import json
from typing import Any

from medseg_weak.report.context import ReportContext
from medseg_weak.report.views import Facts, Figure, Section, read_result_table


def build(ctx: ReportContext) -> Section | None:
    if not ctx.has("interpret"):
        return None
    folder = ctx.run.stage("interpret")
    headline = json.loads((folder / "metrics.json").read_text())
    methods = headline.get("methods", {})
    sanity = {m: e["sanity"]["passed"] for m, e in methods.items() if "sanity" in e}
    facts = [
        ("images", str(headline.get("images"))),
        ("curve steps", str(headline.get("steps"))),
        (
            "no better than random (flagged)",
            ", ".join(headline.get("flagged_no_better_than_random", [])) or "none",
        ),
        ("fail the sanity check", ", ".join(headline.get("sanity_failures", [])) or "none"),
        ("pass the sanity check", ", ".join(m for m, ok in sanity.items() if ok) or "none"),
    ]
    blocks: list[Any] = [Facts(facts)]
    direction = headline.get("metric_direction", {})
    note = "; ".join(f"{k}: {v} is better" for k, v in direction.items())
    for by in ("method", "class", "domain"):
        table = read_result_table(folder / f"by_{by}.csv", f"metrics per {by} (mean ± SE, n images)")
        blocks.append(table if by != "method" else type(table)(table.title, table.header, table.rows, note))
    for name, caption in (
        ("curves.png", "deletion and insertion curves (mean ± SE) per method"),
        ("randomisation.png", "cascading randomisation: similarity to the trained model's maps per layer"),
    ):
        src = ctx.copy_figure(folder / name, f"interpret_{name}")
        if src:
            blocks.append(Figure(src, caption))
    for gallery in sorted(folder.glob("gallery_*.png")):
        src = ctx.copy_figure(gallery, f"interpret_{gallery.name}")
        method = gallery.stem.removeprefix("gallery_")
        blocks.append(
            Figure(src or "", f"{method}: best, worst and random images (image | map + mask contour)")
        )
    intro = (
        "Each method's maps against a random map and a centre-bias map; a method whose deletion AUC is no "
        "better than random's is flagged. Sanity: maps of a model randomised from the top layer down must "
        "change (Adebayo et al. 2018)."
    )
    return Section("interpret", "Interpretability", blocks, intro)
