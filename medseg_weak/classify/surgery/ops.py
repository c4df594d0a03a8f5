"""Tensor helpers shared by the rules: sign agreement, global reductions, weighted sums.

Global reductions (a mean over all components, dot products between whole gradients) run over a list
of per-parameter tensors without concatenating them, and accumulate in float64: products of float32
numbers are exact in float64 and the partial sums carry ~1e-16 relative error, so the result, once
rounded back, does not depend on how the gradient was split into parameters. That is what makes the
flat form and the per-parameter form of every rule agree to the last bit in practice.
"""

from __future__ import annotations

import torch
from torch import Tensor


def chunk_size(device: torch.device) -> int:
    """Columns per chunk for the chunked passes below.

    On CPU, 2**15 columns keep a chunk and its temporaries in cache (2**14..2**16 measured fastest on
    resnet18 gradients) while keeping the Python loop short. On a GPU chunks only add kernel launches,
    so they are large, just bounding the float64 temporaries.
    """
    return 1 << 15 if device.type == "cpu" else 1 << 22


def accumulation_dtype(device: torch.device) -> torch.dtype:
    # MPS has no float64; there the flat and per-parameter forms may differ in the last float32 bit.
    return torch.float32 if device.type == "mps" else torch.float64


def agreement_sum(g: Tensor) -> tuple[Tensor, Tensor]:
    """``(sum_i g_i * agree, agree)`` for ``g`` of shape ``[H, *shape]``.

    ``agree`` is a float tensor ``[*shape]``: 1.0 where every hospital's component has the same STRICT
    sign (a zero counts as disagreement), 0.0 elsewhere, NaN where a component is NaN. It is built from
    the elementwise min and max over hospitals: ``sign(max(min, 0)) - sign(min(max, 0))`` is 1 when all
    are > 0 (first term) or all < 0 (second term), else 0. Keeping it a float that propagates NaN, and
    masking by multiplication rather than indexing or ``torch.where``, means NaN/inf in a gradient still
    reach the combined one, where AMP's GradScaler looks for them.

    On CPU this runs over cache-sized column chunks, fusing the sum, min, max and mask into one pass
    over the gradients: separate full-size reductions were ~2x slower, bound by memory traffic. The
    sum adds hospitals in order 0, 1, ..., like ``g.sum(0)``; every operation is elementwise, so the
    result does not depend on the chunking or on how the gradient is split into parameters.
    """
    hospitals = g.shape[0]
    flat = g.reshape(hospitals, -1)
    n = flat.shape[1]
    total = torch.empty(n, dtype=g.dtype, device=g.device)
    agree = torch.empty(n, dtype=g.dtype, device=g.device)
    chunk = chunk_size(g.device)
    for start in range(0, n, chunk):
        block = flat[:, start : start + chunk]
        s, a = total[start : start + chunk], agree[start : start + chunk]
        low, high = block[0].clone(), block[0].clone()
        s.copy_(block[0])
        for i in range(1, hospitals):
            torch.minimum(low, block[i], out=low)
            torch.maximum(high, block[i], out=high)
            s.add_(block[i])
        torch.sub(low.clamp_(min=0).sign_(), high.clamp_(max=0).sign_(), out=a)
        s.mul_(a)
    return total.view(g.shape[1:]), agree.view(g.shape[1:])


def global_sum(tensors: list[Tensor], *, absolute: bool = False) -> Tensor:
    """Sum of all elements (of their absolute values if ``absolute``) of all ``tensors``.

    Accumulated in float64; returns a 0-dim tensor on the tensors' device.
    """
    dtype = accumulation_dtype(tensors[0].device)
    total = torch.zeros((), dtype=dtype, device=tensors[0].device)
    for t in tensors:
        # Upcast per cache-sized chunk: 4x faster on CPU than ``sum(dtype=float64)``, and ``abs_`` on
        # the chunk's own copy avoids a full-size temporary.
        for chunk in t.reshape(-1).split(chunk_size(t.device)):
            wide = chunk.to(dtype, copy=True)
            total += (wide.abs_() if absolute else wide).sum()
    return total


def count_ones(tensors: list[Tensor]) -> Tensor:
    """Sum of 0/1 (or NaN) float tensors, exactly, as a 0-dim float64 (NaN if any element is NaN).

    A float32 sum of at most 2**24 zeros and ones is an exact integer in any summation order, so
    chunks of 2**24 need no upcast to float64 (cheaper than ``global_sum``) and the count does not
    depend on the split. Half-precision masks are summed as float32 (their own type would round).
    """
    total = torch.zeros((), dtype=accumulation_dtype(tensors[0].device), device=tensors[0].device)
    for t in tensors:
        dtype = torch.float64 if t.dtype == torch.float64 else torch.float32
        for chunk in t.reshape(-1).split(1 << 24):
            total += chunk.sum(dtype=dtype)
    return total


def gram_matrix(grads: list[Tensor]) -> Tensor:
    """``G[i, j] = <g_i, g_j>`` over all parameters, ``[H, H]`` in float64, without concatenating."""
    hospitals = grads[0].shape[0]
    dtype = accumulation_dtype(grads[0].device)
    gram = torch.zeros(hospitals, hospitals, dtype=dtype, device=grads[0].device)
    for g in grads:
        flat = g.reshape(hospitals, -1)
        # Fixed-size chunks whatever the parameter layout, so the upcast temporary stays small.
        step = chunk_size(g.device)
        for start in range(0, flat.shape[1], step):
            block = flat[:, start : start + step].to(dtype)
            gram += block @ block.T
    return gram


def weighted_sum(grads: list[Tensor], weights: Tensor) -> list[Tensor]:
    """``sum_i weights[i] * grads[k][i]`` for every parameter ``k``.

    Written as an explicit elementwise accumulation, not a matmul, so every component sees the same
    operations in the same order whatever the tensor's size (BLAS blocking would not guarantee that).
    """
    out = []
    for g in grads:
        w = weights.to(device=g.device, dtype=g.dtype)
        acc = g[0] * w[0]
        for i in range(1, g.shape[0]):
            acc.addcmul_(g[i], w[i])
        out.append(acc)
    return out
