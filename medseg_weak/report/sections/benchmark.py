"""The domain-generalisation benchmark section: `dg-benchmark`'s recipe x held-out hospital tables (one
per selection rule) and, for `--chain`, the held-out Dice of each recipe's CAMs, UNet and oracle."""

from __future__ import annotations

from typing import Any

from medseg_weak.report.context import ReportContext
from medseg_weak.report.views import Figure, Section, read_result_table

SELECTIONS = {
    "training_domain": "selected on the training hospitals' validation split",
    "oracle": "selected on 20 % of the held-out hospital's patients (an upper bound)",
    "last": "the last epoch",
}
METRICS = ("accuracy", "balanced_accuracy", "kappa", "auroc")


def build(ctx: ReportContext) -> Section | None:
    dg, chain = ctx.run.stage("dg"), ctx.run.stage("chain")
    blocks: list[Any] = []
    for selection, caption in SELECTIONS.items():
        table = dg / f"table_{selection}.csv"
        if table.is_file():
            blocks.append(read_result_table(table, f"classifier, held-out score: {caption}"))
    src = ctx.copy_figure(dg / "table_training_domain.png", "dg_training_domain.png")
    if src:
        blocks.append(Figure(src, "held-out score per recipe (training-domain selection)"))
    if (chain / "table_dice.csv").is_file():
        blocks.append(read_result_table(chain / "table_dice.csv", "whole chain: held-out Dice per recipe"))
        src = ctx.copy_figure(chain / "table_dice.png", "chain_dice.png")
        if src:
            blocks.append(Figure(src, "held-out Dice: CAMs, UNet on CAMs and oracle, per recipe"))
        for metric in METRICS:
            table = chain / f"table_classifier_{metric}.csv"
            if table.is_file():
                blocks.append(read_result_table(table, f"whole chain: its classifiers' held-out {metric}"))
    if not blocks:
        return None
    intro = (
        "Each hospital held out in turn; rows are recipes (a gradient rule, scanner-shift augmentation "
        "'aug', or both), cells the mean ± SE over seeds (n = seeds)."
    )
    return Section("benchmark", "Across hospitals: recipes", blocks, intro)
