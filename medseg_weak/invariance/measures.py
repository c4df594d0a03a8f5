"""The invariance and same-equivariance measures, with tmeasures' definitions (Quiroga & Lanzarini).

One responsibility: turn one layer's :class:`~medseg_weak.invariance.streaming.LayerStats` into one
value per activation unit. For each unit, over the N x T matrix a[sample, transformation]:

* ``transformation_variance``: mean over samples of the std over transformations;
* ``sample_variance``: mean over transformations of the std over samples (n - 1 denominators);
* ``normalized_variance``: their quotient, with 0/0 = 1 (a constant unit is as invariant as it is
  uninformative) and x/0 = inf, exactly as tmeasures' ``safe_divide``;
* ``anova``: 1 where a one-way ANOVA (groups = transformations) rejects equal means at ``alpha``
  with a Bonferroni correction over the layer's units, else 0: the fraction of units whose mean the
  transformation moves. tmeasures' ``ANOVAInvariance`` also reports "F above the critical value";
  its critical value is ``f.ppf(alpha / units)`` with alpha = 0.99, which is the lower tail, so here the
  test is written the usual way (``p < alpha / units``, alpha = 0.01);
* the ``*_same_equivariance`` measures: the same three variances, of T^-1 applied to the activation
  map of T(x) (tmeasures' ``InverseTransformationTransformer``): 0 when every layer map moves with
  the input, f(T x) = T f(x).

``average_feature_maps`` (tmeasures' ``AverageFeatureMaps``): for [C, H, W] units, the per-position
variances are averaged over each feature map *before* the quotient; other shapes are left as they are.
Lower is more invariant for every measure.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import scipy.stats
import torch

from medseg_weak.invariance.streaming import LayerStats
from medseg_weak.registry import Registry

__all__ = ["ANOVA_ALPHA", "MEASURES", "Measure", "average_feature_maps", "safe_divide"]

ANOVA_ALPHA = 0.01
Reduce = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Measure:
    """``compute(stats, reduce) -> per-unit values``; ``same_equivariance``: stats of T^-1 f(T x)."""

    name: str
    compute: Callable[[LayerStats, Reduce], torch.Tensor]
    same_equivariance: bool = False


MEASURES: Registry[Measure] = Registry("invariance measure")


def average_feature_maps(values: torch.Tensor) -> torch.Tensor:
    """Per-unit values of a [C, H, W] map -> one per channel [C]; other shapes unchanged (as tmeasures)."""
    return values.mean(dim=(1, 2)) if values.ndim == 3 else values


def safe_divide(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """num / den with 0/0 = 1 and x/0 = inf (tmeasures' convention for the normalized variance)."""
    out = num / torch.where(den > 0, den, torch.ones_like(den))
    out = torch.where((den <= 0) & (num <= 0), torch.ones_like(out), out)
    return torch.where((den <= 0) & (num > 0), torch.full_like(out, float("inf")), out)


def transformation_variance(stats: LayerStats, reduce: Reduce) -> torch.Tensor:
    return reduce(stats.transformation_std)


def sample_variance(stats: LayerStats, reduce: Reduce) -> torch.Tensor:
    return reduce(stats.sample_std.mean(dim=0))


def normalized_variance(stats: LayerStats, reduce: Reduce) -> torch.Tensor:
    return safe_divide(transformation_variance(stats, reduce), sample_variance(stats, reduce))


def anova_variant(stats: LayerStats, reduce: Reduce, alpha: float = ANOVA_ALPHA) -> torch.Tensor:
    n, t = stats.n_samples, stats.n_transformations
    grand = stats.means.mean(dim=0)
    between = n * (stats.means - grand).square().sum(dim=0) / (t - 1)
    within = stats.m2.sum(dim=0) / (t * (n - 1))
    # no spread at all within the groups: any difference of means is certain (inf), none is 0
    f = safe_divide(between, within)
    f = torch.where((within <= 0) & (between <= 0), torch.zeros_like(f), f)
    p = torch.as_tensor(scipy.stats.f.sf(f.cpu().numpy(), t - 1, t * (n - 1)), dtype=torch.float64)
    variant = (p < alpha / max(1, f.numel())).to(f.device, torch.float64)
    return reduce(variant)


MEASURES.register("transformation_variance")(Measure("transformation_variance", transformation_variance))
MEASURES.register("sample_variance")(Measure("sample_variance", sample_variance))
MEASURES.register("normalized_variance")(Measure("normalized_variance", normalized_variance))
MEASURES.register("anova")(Measure("anova", anova_variant))
for _base in ("transformation_variance", "sample_variance", "normalized_variance"):  # same maths, T^-1 f(T x)
    _name = f"{_base}_same_equivariance"
    MEASURES.register(_name)(Measure(_name, MEASURES.get(_base).compute, same_equivariance=True))
