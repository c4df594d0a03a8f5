"""Group DRO (Sagawa et al., ICLR 2020; DomainBed ``GroupDRO``): upweight the hospitals with high loss.

Stateful: per-hospital weights ``q`` start uniform and after every step become
``q_i <- q_i * exp(eta * loss_i)``, normalised; the update is ``H * sum_i q_i g_i`` (the factor H makes
uniform weights reproduce ``erm``'s scale). As in DomainBed, ``q`` is updated first and the NEW weights
combine the gradients. Keep one instance per training run (``RULES.get("group_dro")(eta=...)``); the
functional ``combine("group_dro", ...)`` uses a fresh instance, i.e. uniform ``q`` before its update.
Under DDP the caller must all-reduce the losses too, so every process keeps the same ``q``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from medseg_weak.classify.surgery.base import RULES, GradientRule
from medseg_weak.classify.surgery.ops import weighted_sum


@RULES.register("group_dro")
@dataclass(eq=False)  # identity semantics: instances hold mutable state
class GroupDro(GradientRule):
    """``H * sum_i q_i g_i`` with exponentiated-gradient weights ``q`` over hospitals."""

    eta: float = 0.01
    # log q, not q: a hospital whose weight falls below float64's range can still recover, where a
    # multiplicative update of q itself would leave it at exactly 0 for good.
    log_q: Tensor | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.eta < 0:
            raise ValueError(f"group_dro eta must be >= 0; got {self.eta}")

    @property
    def q(self) -> Tensor | None:
        """The current per-hospital weights (sum to 1), or None before the first step."""
        return None if self.log_q is None else self.log_q.exp()

    def combine(
        self,
        grads: list[Tensor],
        *,
        generator: torch.Generator | None = None,
        losses: Tensor | None = None,
    ) -> list[Tensor]:
        if losses is None:
            raise ValueError(
                "group_dro needs the per-hospital losses: pass losses=tensor [hospitals] "
                "(per_hospital_gradients returns them)"
            )
        hospitals = grads[0].shape[0]
        losses = losses.detach().to(torch.float64)
        if self.log_q is None:
            self.log_q = torch.full(
                (hospitals,), -math.log(hospitals), dtype=torch.float64, device=losses.device
            )
        elif self.log_q.shape != (hospitals,):
            raise ValueError(f"group_dro holds weights for {self.log_q.shape[0]} hospitals, got {hospitals}")
        # q_i <- q_i * exp(eta * loss_i), normalised: in log space, log_softmax does both without overflow.
        self.log_q = torch.log_softmax(self.log_q.to(losses.device) + self.eta * losses, dim=0)
        return weighted_sum(grads, self.log_q.exp() * hospitals)

    def state_dict(self) -> dict[str, Any]:
        return {} if self.log_q is None else {"log_q": self.log_q.detach().cpu().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.log_q = state["log_q"].clone() if "log_q" in state else None
