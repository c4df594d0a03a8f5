"""Agr-Sum (Mansilla et al., ICCV 2021): keep only the components on which all hospitals agree in sign."""

from __future__ import annotations

import torch
from torch import Tensor

from medseg_weak.classify.surgery.base import RULES, GradientRule
from medseg_weak.classify.surgery.ops import agreement_sum


@RULES.register("agr_sum")
class AgrSum(GradientRule):
    """``sum_i g_i`` with every component zeroed where the hospitals' signs are not all strictly equal."""

    def combine(
        self,
        grads: list[Tensor],
        *,
        generator: torch.Generator | None = None,
        losses: Tensor | None = None,
    ) -> list[Tensor]:
        return [agreement_sum(g)[0] for g in grads]
