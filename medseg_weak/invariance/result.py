"""InvarianceResult: one measure's values per unit and per layer, overall and per group, as rows / CSV."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medseg_weak.io_utils import atomic_write_text

__all__ = ["InvarianceResult", "layer_mean"]

ALL = "all"  # the group label of the pooled result


def layer_mean(values: np.ndarray) -> float:
    """Mean of a layer's finite units (tmeasures' ``per_layer_average`` leaves inf out); NaN if none."""
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else math.nan


@dataclass(frozen=True)
class InvarianceResult:
    """``per_unit[layer]``: float64 array shaped like one sample's activation (``[C]`` after
    ``average_feature_maps`` on a [C, H, W] map); ``per_layer[layer]``: their finite mean.
    ``groups``: the same measure on each group's samples alone (e.g. per hospital)."""

    measure: str
    per_unit: dict[str, np.ndarray]
    transformations: list[str]
    n_samples: int
    average_feature_maps: bool
    group: str = ALL
    groups: dict[str, InvarianceResult] = field(default_factory=dict)

    @property
    def layers(self) -> list[str]:
        return list(self.per_unit)

    @property
    def per_layer(self) -> dict[str, float]:
        return {layer: layer_mean(values) for layer, values in self.per_unit.items()}

    def to_rows(self, per_unit: bool = False) -> list[dict[str, object]]:
        """One row per (group, layer), or per (group, layer, unit); the pooled result first."""
        rows: list[dict[str, object]] = []
        for result in (self, *self.groups.values()):
            for depth, (layer, values) in enumerate(result.per_unit.items()):
                base = {"measure": self.measure, "group": result.group, "layer": layer, "depth": depth}
                if per_unit:
                    flat = values.reshape(-1)
                    rows.extend({**base, "unit": u, "value": float(v)} for u, v in enumerate(flat))
                else:
                    finite = int(np.isfinite(values).sum())
                    rows.append(
                        {
                            **base,
                            "value": layer_mean(values),
                            "units": int(values.size),
                            "finite_units": finite,
                            "n_samples": result.n_samples,
                        }
                    )
        return rows

    def to_csv(self, path: str | Path, per_unit: bool = False) -> Path:
        rows = self.to_rows(per_unit)
        buffer = io.StringIO()
        writer = csv.DictWriter(
            buffer, fieldnames=list(rows[0]) if rows else ["measure"], lineterminator="\n"
        )
        writer.writeheader()
        writer.writerows(rows)
        return atomic_write_text(Path(path), buffer.getvalue())
