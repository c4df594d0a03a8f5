"""Per-hospital gradients of a model's trainable parameters, and writing a combined gradient back.

Semantics: each hospital gets its OWN forward pass, so in train mode BatchNorm normalises every
hospital's batch with that hospital's statistics, and hospital i's gradient depends on hospital i's
data only (what "per-hospital gradient" means in DGvGS, which runs one forward per domain). BN running
statistics are updated once per hospital, in the order of ``batches``, exactly as a naive
forward/backward loop would. The fair ERM baseline for this forward is "one forward per hospital, one
backward of the summed losses" (the ``erm`` rule applied to these gradients gives that gradient).

Why a loop and not one batched pass (scripts/bench/bench_surgery.py: resnet18, 3 hospitals x 8 images,
128 px, CPU; full training step with agr_sum, relative to plain ERM):
  * a single forward over the concatenated batch mixes BN statistics across hospitals, so every
    hospital's loss depends on every sample and exact per-hospital gradients need H full backward
    passes: ``autograd.grad(..., retain_graph=True)`` per hospital measured ~2.1x, and
    ``is_grads_batched`` (the same H backward passes, vmapped) ~2.3x, with 1.5-3x the memory;
  * ``torch.func.vmap(grad(...))`` over a hospital dimension keeps per-hospital BN and merges the
    forward convolutions, but the per-hospital weight gradients become grouped convolutions, slower
    on CPU than H small backward passes: ~1.2x (1 thread) to ~1.5x (2 threads), 2.4x the memory;
  * this loop: H small forward/backward passes (ERM's FLOPs) plus one copy of each gradient into the
    ``[H, *shape]`` output: ~1.02-1.08x with agr_sum, ~1.04x ERM's peak memory. ``autograd.grad``
    (not ``.backward()``) leaves ``.grad`` untouched and skips the naive loop's accumulate-then-clone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor, nn


def per_hospital_gradients(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    batches: Sequence[tuple[Tensor, Tensor]],
) -> tuple[list[Tensor], Tensor]:
    """Gradients of each hospital's loss w.r.t. the trainable parameters, and the losses.

    Returns ``(grads, losses)``: ``grads[k]`` is ``[H, *shape_k]`` for the k-th parameter of
    ``model.parameters()`` with ``requires_grad`` (zeros for a parameter a hospital's loss does not
    reach), ``losses`` is ``[H]`` (detached). ``loss_fn(model(x), y)`` must return a scalar.

    Under DDP pass the unwrapped module: ``autograd.grad`` does not run DDP's gradient hooks, and the
    caller all-reduces these per-hospital gradients (and the losses, for group_dro) itself. With AMP,
    a ``loss_fn`` that applies ``GradScaler.scale`` also returns scaled losses: unscale them (divide by
    ``scaler.get_scale()``) before giving them to group_dro.
    """
    if len(batches) == 0:
        raise ValueError("per_hospital_gradients needs at least one (x, y) batch")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    hospitals = len(batches)
    grads = [torch.empty((hospitals, *p.shape), dtype=p.dtype, device=p.device) for p in params]
    losses = []
    for h, (x, y) in enumerate(batches):
        loss = loss_fn(model(x), y)
        if loss.dim() != 0:
            raise ValueError(f"loss_fn must return a scalar; got shape {tuple(loss.shape)} for hospital {h}")
        for out, g in zip(grads, torch.autograd.grad(loss, params, allow_unused=True)):
            if g is None:
                out[h].zero_()
            else:
                out[h].copy_(g)
        losses.append(loss.detach())
    return grads, torch.stack(losses)


def assign_gradients(params: Iterable[nn.Parameter], grads: Sequence[Tensor]) -> None:
    """Set ``p.grad`` to the combined gradients (same order as ``per_hospital_gradients``'s parameters).

    The combined tensors are fresh, so they are used as ``.grad`` directly, without a copy.
    """
    params = list(params)
    if len(params) != len(grads):
        raise ValueError(f"{len(params)} parameters but {len(grads)} gradients")
    for p, g in zip(params, grads):
        if g.shape != p.shape:
            raise ValueError(f"gradient of shape {tuple(g.shape)} for a parameter of shape {tuple(p.shape)}")
        p.grad = g.to(p.dtype)
