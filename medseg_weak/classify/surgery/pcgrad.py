"""PCGrad as DGvGS applies it (Mansilla et al., ICCV 2021; Yu et al., NeurIPS 2020).

Hospitals are visited in a random order; hospital i's gradient is projected, sequentially and in that
order, off every OTHER hospital's ORIGINAL gradient g_j it conflicts with (negative dot product
between the already-projected g_i and g_j); the projected gradients are summed. As in the DGvGS code
one permutation serves both loops (the j's follow the same order, skipping i), so only the order of
the j's matters; the outer order does not change the result.

Every projected gradient is a linear combination of the original ones, ``g_i^pc = sum_k A[i, k] g_k``,
and ``<g_i^pc, g_j> = (A G)[i, j]`` with G the Gram matrix of the originals. So the whole sequential
procedure runs on H x H numbers: one pass over the gradients builds G, one weighted sum builds the
result, and no per-hospital copy of the gradient is ever made.
"""

from __future__ import annotations

import torch
from torch import Tensor

from medseg_weak.classify.surgery.base import RULES, GradientRule
from medseg_weak.classify.surgery.ops import gram_matrix, weighted_sum


def pcgrad_weights(gram: Tensor, order: list[int]) -> Tensor:
    """Weights ``w`` with ``pcgrad(g) = sum_k w[k] g_k``, from the Gram matrix and the visiting order."""
    hospitals = gram.shape[0]
    coeffs = torch.eye(hospitals, dtype=gram.dtype)  # row i: g_i^pc in the basis of the original g_k
    for i in order:
        for j in order:
            if j == i:
                continue
            dot = coeffs[i] @ gram[:, j]
            # dot < 0 implies |g_j| > 0, so the division is safe where it is used.
            if dot < 0:
                coeffs[i, j] -= dot / gram[j, j]
    return coeffs.sum(0)


@RULES.register("pcgrad")
class PcGrad(GradientRule):
    """Sum of the hospitals' gradients after projecting out pairwise conflicts (random order)."""

    def combine(
        self,
        grads: list[Tensor],
        *,
        generator: torch.Generator | None = None,
        losses: Tensor | None = None,
    ) -> list[Tensor]:
        hospitals = grads[0].shape[0]
        device = generator.device if generator is not None else torch.device("cpu")
        order = torch.randperm(hospitals, generator=generator, device=device).tolist()
        # The H x H algebra is a handful of scalar steps: do it on the CPU (one small copy) rather than
        # launch tiny kernels and sync on every comparison.
        weights = pcgrad_weights(gram_matrix(grads).cpu(), order)
        return weighted_sum(grads, weights)
