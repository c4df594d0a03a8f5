"""AND-mask (Parascandolo et al., ICLR 2021; DomainBed ``ANDMask``): keep components whose signs agree.

The mean gradient is kept where ``|mean_i sign(g_i)| >= tau`` and zeroed elsewhere, then divided by
the fraction of components kept so the step size does not shrink with the mask. ``tau = 1`` requires
every hospital to share the strict sign (like Agr-Sum, but with the mean instead of the sum).

Deviation from DomainBed: DomainBed (and the paper's code) rescale each parameter TENSOR by its own
kept fraction. Here the fraction is global over all parameters, because a per-tensor fraction cannot be
computed on the flat form and the flat and per-parameter forms must agree; within a tensor the relative
scale of the components is unchanged, only the per-layer step sizes differ from DomainBed's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from medseg_weak.classify.surgery.base import RULES, GradientRule
from medseg_weak.classify.surgery.ops import agreement_sum, count_ones


@RULES.register("and_mask")
@dataclass(frozen=True)
class AndMask(GradientRule):
    """Masked mean gradient, rescaled by ``1 / (1e-10 + fraction kept)`` as in DomainBed."""

    tau: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.tau <= 1.0:
            raise ValueError(f"and_mask tau must be in [0, 1]; got {self.tau}")

    def combine(
        self,
        grads: list[Tensor],
        *,
        generator: torch.Generator | None = None,
        losses: Tensor | None = None,
    ) -> list[Tensor]:
        hospitals = grads[0].shape[0]
        if self.tau == 1.0:
            # |mean sign| >= 1 iff every sign is the same nonzero one: Agr-Sum's cheaper fused pass.
            sums, masks = zip(*(agreement_sum(g) for g in grads))
            means = [s.div_(hospitals) for s in sums]
        else:
            masks = [(torch.sign(g).mean(0).abs() >= self.tau).to(g.dtype) for g in grads]
            means = [g.mean(0).mul_(m) for g, m in zip(grads, masks)]
        kept = count_ones(list(masks)) / sum(m.numel() for m in masks)
        rescale = (1.0 / (1e-10 + kept)).to(grads[0].dtype)
        return [m.mul_(rescale) for m in means]
