"""Typed results of an interpretability run, with per-image values, and their aggregation.

One responsibility: hold what ``interpret_classifier`` measured and summarise it (mean ± SE per
method, per class, per domain) through :class:`medseg_weak.tables.Table`, so every report aggregates
the same way. Values that do not apply (localisation without a mask) are NaN per image and left out
of the averages; the tables' counts say how many images each cell has.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from medseg_weak.interpret.sanity import SANITY_THRESHOLD, RandomisationResult
from medseg_weak.tables import Table, summarise

#: Per-image metrics, in report order, with the direction a faithful / well-localised map goes.
METRICS: dict[str, str] = {
    "deletion_auc": "lower",
    "insertion_auc": "higher",
    "road_morf": "lower",
    "road_lerf": "higher",
    "confidence_change": "higher",
    "pointing": "higher",
    "relevance_mass": "higher",
    "relevance_rank": "higher",
    "energy_outside": "lower",
}
GroupBy = Literal["method", "class", "domain"]


@dataclass(frozen=True)
class MethodScores:
    """One saliency method (or baseline) over the images: its maps, curves and per-image metrics."""

    method: str
    baseline: bool
    maps: np.ndarray  # [N, H, W] float32 in [0, 1]
    deletion_curve: np.ndarray  # [N, steps + 1]
    insertion_curve: np.ndarray  # [N, steps + 1]
    road_morf_curve: np.ndarray  # [N, P] score change per ROAD percentile
    road_lerf_curve: np.ndarray  # [N, P]
    values: dict[str, np.ndarray]  # metric name (METRICS) -> [N]
    flagged: bool  # no better than the random baseline (baselines.no_better_than_random)

    def metric(self, name: str) -> np.ndarray:
        return self.values[name]


@dataclass(frozen=True)
class InterpretResult:
    """Everything measured for one classifier; ``write_interpret_outputs`` turns it into files."""

    ids: tuple[str, ...]
    labels: tuple[str, ...]
    domains: tuple[str, ...]
    targets: np.ndarray  # [N] class id each map explains
    images: np.ndarray  # [N, C, H, W] float32, for the galleries
    masks: np.ndarray | None  # [N, H, W] bool
    regions: np.ndarray | None  # [N, H, W] bool
    steps: int
    road_percentiles: tuple[float, ...]
    methods: dict[str, MethodScores]
    sanity: dict[str, RandomisationResult] = field(default_factory=dict)
    data_randomisation: dict[str, RandomisationResult] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def explained(self) -> Iterator[MethodScores]:
        """The CAM methods, baselines left out."""
        return (m for m in self.methods.values() if not m.baseline)

    def flagged(self) -> list[str]:
        return [m.method for m in self.explained() if m.flagged]

    def sanity_failures(self) -> list[str]:
        checks = [*self.sanity.values(), *self.data_randomisation.values()]
        return sorted({c.method for c in checks if not c.passed})


def summary_table(result: InterpretResult, by: GroupBy = "method") -> Table:
    """Mean ± SE over images: rows = method (or ``method | group``), columns = metrics."""
    groups = {"method": None, "class": result.labels, "domain": result.domains}[by]
    values = []
    for scores in result.methods.values():
        for name in METRICS:
            per_image = scores.metric(name)
            for i, v in enumerate(per_image):
                if not math.isfinite(float(v)):
                    continue
                row = scores.method if groups is None else f"{scores.method} | {groups[i]}"
                values.append((row, name, float(v)))
    title = "method" if by == "method" else f"method | {by}"
    return Table.from_values(title, values, average_column=None)


def headline(result: InterpretResult) -> dict[str, Any]:
    """The JSON summary: per method mean / SE / n of every metric, flags and sanity verdicts."""
    methods: dict[str, Any] = {}
    for scores in result.methods.values():
        entry: dict[str, Any] = {"baseline": scores.baseline, "flagged_no_better_than_random": scores.flagged}
        for name in METRICS:
            finite = [float(v) for v in scores.metric(name) if math.isfinite(float(v))]
            cell = summarise(finite)
            entry[name] = {"mean": _num(cell.mean), "se": _num(cell.se), "n": cell.n}
        for kind, checks in (("sanity", result.sanity), ("data_randomisation", result.data_randomisation)):
            if scores.method in checks:
                check = checks[scores.method]
                entry[kind] = {
                    "passed": check.passed,
                    "final_spearman": _num(check.final_spearman),
                    "final_ssim": _num(float(np.nanmean(check.ssim[-1]))),
                    "threshold": SANITY_THRESHOLD,
                }
        methods[scores.method] = entry
    return {
        "images": len(result),
        "steps": result.steps,
        "road_percentiles": list(result.road_percentiles),
        "settings": result.settings,
        "flagged_no_better_than_random": result.flagged(),
        "sanity_failures": result.sanity_failures(),
        "metric_direction": METRICS,
        "methods": methods,
    }


def _num(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None
