"""Cheap gradient-conflict diagnostics to log every N steps: sign disagreement and hospital cosines.

One pass per parameter for the sign test and one for the Gram matrix, and a single device-to-host
copy at the end, so logging does not stall the GPU once per parameter.
"""

from __future__ import annotations

import torch
from torch import Tensor

from medseg_weak.classify.surgery.base import check_gradients
from medseg_weak.classify.surgery.ops import agreement_sum, count_ones, gram_matrix


def conflict_diagnostics(grads: list[Tensor], names: list[str]) -> dict[str, float]:
    """Fractions of sign-disagreeing components and pairwise cosines between hospital gradients.

    Keys: ``disagree/<name>`` per parameter and ``disagree/all`` (a component disagrees unless every
    hospital has the same STRICT sign, the complement of Agr-Sum's mask), ``cos/h<i>-h<j>`` for every
    pair of hospitals, ``norm/h<i>`` (each hospital's gradient norm). A zero gradient has cosine 0 with
    everything (as ``torch.nn.functional.cosine_similarity``).
    """
    grads = check_gradients(grads)
    if len(names) != len(grads):
        raise ValueError(f"{len(names)} names for {len(grads)} gradients")
    sizes = torch.tensor([g[0].numel() for g in grads], dtype=torch.float64)
    agreeing = torch.stack([count_ones([agreement_sum(g)[1]]) for g in grads])
    disagree = sizes.to(agreeing.device) - agreeing
    gram = gram_matrix(grads)
    disagree, gram = disagree.cpu(), gram.cpu()  # the one sync

    out = {f"disagree/{n}": float(d / s) for n, d, s in zip(names, disagree, sizes)}
    out["disagree/all"] = float(disagree.sum() / sizes.sum())
    norms = gram.diagonal().clamp(min=0).sqrt()
    hospitals = gram.shape[0]
    for i in range(hospitals):
        out[f"norm/h{i}"] = float(norms[i])
    for i in range(hospitals):
        for j in range(i + 1, hospitals):
            denom = norms[i] * norms[j]
            out[f"cos/h{i}-h{j}"] = float(gram[i, j] / denom) if denom > 0 else 0.0
    return out
