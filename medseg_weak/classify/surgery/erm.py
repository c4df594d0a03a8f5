"""ERM ("Deep-All"): the plain sum of the hospitals' gradients, the baseline every other rule modifies."""

from __future__ import annotations

import torch
from torch import Tensor

from medseg_weak.classify.surgery.base import RULES, GradientRule


@RULES.register("erm")
class Erm(GradientRule):
    """``sum_i g_i``: the gradient of the summed per-hospital losses."""

    def combine(
        self,
        grads: list[Tensor],
        *,
        generator: torch.Generator | None = None,
        losses: Tensor | None = None,
    ) -> list[Tensor]:
        return [g.sum(0) for g in grads]
