"""Segmentation losses on CAM pseudo-masks: pure functions ``(logits, target) -> scalar`` that ignore 255.

Targets are ``[B, H, W]`` integers: 0 background, 1 dense tissue, ``IGNORE`` (255) where the CAM rule
was not sure. Ignored pixels contribute nothing to any sum (value or gradient), so changing the
network's output there never changes the loss. Logits are binary: ``[B, 1, H, W]`` (one foreground
logit) or ``[B, 2, H, W]`` (background, foreground), reduced to the single logit ``l1 - l0`` because
``sigmoid(l1 - l0) == softmax(l)[:, 1]`` and BCE on it equals the two-class cross-entropy exactly.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from medseg_weak.core.overlap import IGNORE
from medseg_weak.registry import Registry

LossFn = Callable[..., Tensor]
LOSSES: Registry[LossFn] = Registry("segmentation loss")


def foreground_logit(logits: Tensor, target: Tensor) -> Tensor:
    """``[B, 1|2, H, W]`` logits -> ``[B, H, W]`` foreground logit, checking shapes against ``target``."""
    if logits.ndim != 4 or logits.shape[1] not in (1, 2):
        raise ValueError(f"logits must be [B, 1, H, W] or [B, 2, H, W]; got {tuple(logits.shape)}")
    if target.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(f"target {tuple(target.shape)} does not match logits {tuple(logits.shape)}")
    return logits[:, 0] if logits.shape[1] == 1 else logits[:, 1] - logits[:, 0]


def _split(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(foreground logit as float, 0/1 target as float with ignored pixels set to 0, valid mask)."""
    z = foreground_logit(logits, target).float()
    valid = target != IGNORE
    # Ignored pixels get label 0 only so that the arithmetic below is defined; every sum multiplies by
    # ``valid``, which also zeroes their gradient.
    y = torch.where(valid, target, torch.zeros_like(target)).float()
    return z, y, valid.float()


def masked_soft_dice_loss(logits: Tensor, target: Tensor, eps: float = 1e-7) -> Tensor:
    """``1 - 2 sum(p y) / sum(p + y)`` over the non-ignored pixels of the whole batch.

    One Dice over the batch (not a mean of per-image Dice), as smp's ``DiceLoss(mode="binary")``:
    per-image Dice is undefined on images whose pseudo-mask has no foreground, which CAM masks of
    fatty breasts often are. When the batch has no foreground at all the loss is 0 (as smp), and the
    cross-entropy term alone pushes predictions down there.
    """
    z, y, valid = _split(logits, target)
    p = torch.sigmoid(z) * valid
    intersection = (p * y).sum()
    cardinality = (p + y).sum()
    dice = 2.0 * intersection / cardinality.clamp_min(eps)
    has_foreground = (y.sum() > 0).to(dice.dtype)
    return (1.0 - dice) * has_foreground


def masked_bce_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Binary cross-entropy with logits, averaged over the non-ignored pixels (0 when all are ignored)."""
    z, y, valid = _split(logits, target)
    per_pixel = F.binary_cross_entropy_with_logits(z, y, reduction="none")
    return (per_pixel * valid).sum() / valid.sum().clamp_min(1.0)


@LOSSES.register("dice_ce")
def masked_dice_ce_loss(
    logits: Tensor, target: Tensor, dice_weight: float = 1.0, ce_weight: float = 1.0
) -> Tensor:
    """``dice_weight * soft Dice loss + ce_weight * BCE``, both over the non-ignored pixels."""
    loss = logits.new_zeros((), dtype=torch.float32)
    if dice_weight:
        loss = loss + dice_weight * masked_soft_dice_loss(logits, target)
    if ce_weight:
        loss = loss + ce_weight * masked_bce_loss(logits, target)
    return loss


@LOSSES.register("gce")
def generalized_ce_loss(logits: Tensor, target: Tensor, q: float = 0.7) -> Tensor:
    """Generalized cross-entropy (Zhang & Sabuncu, NeurIPS 2018): mean of ``(1 - p_y^q) / q``.

    ``p_y`` is the probability of the pixel's label. ``q -> 0`` gives cross-entropy ``-log p_y``;
    ``q = 1`` gives MAE ``1 - p_y = |y - p|``, which is robust to label noise but slow to fit; values in
    between (0.7 in the paper) trade the two, which suits the noisy borders of CAM pseudo-masks.
    """
    if not 0.0 < q <= 1.0:
        raise ValueError(f"gce q must be in (0, 1]; got {q}")
    z, y, valid = _split(logits, target)
    # log p_y = logsigmoid(z) for label 1 and logsigmoid(-z) for label 0; p_y^q = exp(q log p_y) stays
    # finite and has useful gradients even for saturated logits, unlike sigmoid(z) ** q.
    log_p_y = F.logsigmoid(torch.where(y > 0, z, -z))
    per_pixel = -torch.expm1(q * log_p_y) / q
    return (per_pixel * valid).sum() / valid.sum().clamp_min(1.0)


def size_penalty(logits: Tensor, region: Tensor, bounds: Tensor) -> Tensor:
    """How far each image's predicted foreground fraction of ``region`` lies outside its
    ``bounds[b] = (low, high)``, averaged over the batch; images whose bounds are NaN add 0.

    A size constraint from image-level labels (Kervadec et al., "Constrained-CNN losses for weakly
    supervised segmentation", MedIA 2019), with the soft fraction so that it is differentiable. It
    is linear in the violation: missing a bound by 10 % of the region costs 0.1 whatever the size.
    """
    if region.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(f"region {tuple(region.shape)} does not match logits {tuple(logits.shape)}")
    if bounds.shape != (logits.shape[0], 2):
        raise ValueError(f"bounds must be [B, 2]; got {tuple(bounds.shape)}")
    probs = torch.sigmoid(foreground_logit(logits, region).float())
    inside = region.float()
    fraction = (probs * inside).sum((1, 2)) / inside.sum((1, 2)).clamp(min=1.0)
    known = torch.isfinite(bounds).all(dim=1)
    low, high = torch.nan_to_num(bounds[:, 0].float()), torch.nan_to_num(bounds[:, 1].float())
    violation = torch.relu(low - fraction) + torch.relu(fraction - high)
    return (violation * known).sum() / len(violation)
