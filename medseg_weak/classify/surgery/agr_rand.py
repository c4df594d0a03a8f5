"""Agr-Rand (Mansilla et al., ICCV 2021): Agr-Sum, with disagreeing components replaced by scaled noise.

A disagreeing component becomes ``N(0, 1) * m``, where ``m`` is the mean absolute value of the summed
gradient over the agreeing components of the WHOLE model (a global statistic, as in DGvGS, not one per
parameter tensor).

Edge case: when no component agrees, ``m`` is an empty mean. We take ``m = 0``, so the update is zero,
the same as Agr-Sum's: with no consensus there is no magnitude to calibrate the noise on, and a zero
step is the conservative choice (the DGvGS code would produce NaN).
"""

from __future__ import annotations

import torch
from torch import Tensor

from medseg_weak.classify.surgery.base import RULES, GradientRule
from medseg_weak.classify.surgery.ops import agreement_sum, count_ones, global_sum


@RULES.register("agr_rand")
class AgrRand(GradientRule):
    """Agr-Sum where every disagreeing component is a draw from ``N(0, m^2)``."""

    def combine(
        self,
        grads: list[Tensor],
        *,
        generator: torch.Generator | None = None,
        losses: Tensor | None = None,
    ) -> list[Tensor]:
        sums, agree = zip(*(agreement_sum(g) for g in grads))  # sums are already 0 where no agreement
        count = count_ones(list(agree))
        total = global_sum(list(sums), absolute=True)
        scale = torch.where(count > 0, total / count.clamp(min=1), torch.zeros_like(total))
        scale = scale.to(sums[0].dtype)

        # One draw for every component (not only the disagreeing ones): no data-dependent size, so no
        # host sync, and the draw split by parameter equals the draw for the flat vector, which keeps
        # the per-parameter form identical to the flat one. The agreeing draws are simply unused.
        numel = sum(s.numel() for s in sums)
        noise = torch.randn(numel, generator=generator, device=sums[0].device, dtype=sums[0].dtype)
        out = []
        offset = 0
        for s, a in zip(sums, agree):
            draw = noise[offset : offset + s.numel()].view_as(s)
            offset += s.numel()
            # scale * (1 - agree), in place on our own temporary: 0 where the hospitals agree (the sum
            # is kept exactly), scale where they do not, NaN where a gradient is NaN. Arithmetic rather
            # than indexing, so NaN/inf still reach the output, where GradScaler looks for them.
            weight = a.mul_(-scale).add_(scale)
            out.append(s.addcmul_(draw, weight))
        return out
