"""Per-image segmentation metrics (Dice, IoU, HD95, ASSD) with an explicit empty-mask policy.

This module's one job is to score a binary predicted mask against a binary truth mask, one image at a
time. Dice and IoU come from :func:`medseg_weak.core.overlap.overlap`; HD95 and the symmetric
average surface distance (ASSD) come from MONAI (``compute_hausdorff_distance`` with
``percentile=95`` and ``compute_average_surface_distance`` with ``symmetric=True``), whenever both
masks are non-empty.

Empty-mask policy (MONAI returns NaN / inf for these and the case silently drops out of a
``nanmean``, MONAI #9095, so a model that misses a lesion entirely would look *better*):

=====================  ======  =====  ==================  ==================
case                   dice    iou    hd95                assd
=====================  ======  =====  ==================  ==================
both empty             1       1      0                   0
exactly one empty      0       0      image diagonal      image diagonal
both non-empty         overlap.py     MONAI               MONAI
=====================  ======  =====  ==================  ==================

The image diagonal is the largest distance two pixels of the image can be apart, i.e. the worst a
distance metric can score on that image: ``sqrt(H**2 + W**2)`` in pixels, or
``sqrt((H * sy)**2 + (W * sx)**2)`` in physical units when ``spacing=(sy, sx)`` is given.

``spacing`` is (row, col) pixel size, e.g. in mm, and is passed to MONAI unchanged, so anisotropic
pixels are measured correctly (MONAI #6137).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

from medseg_weak.core.overlap import overlap

__all__ = ["batch_segmentation_metrics", "segmentation_metrics"]

Spacing = tuple[float, float]


def _as_bool_numpy(mask: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    return np.asarray(mask).astype(bool)


def _check_spacing(spacing: Sequence[float] | None) -> Spacing | None:
    if spacing is None:
        return None
    if len(spacing) != 2 or not all(float(s) > 0 for s in spacing):
        raise ValueError(f"spacing must be two positive numbers (row, col), got {spacing!r}")
    return float(spacing[0]), float(spacing[1])


def _diagonal(shape: tuple[int, ...], spacing: Spacing | None) -> float:
    sy, sx = spacing if spacing is not None else (1.0, 1.0)
    return math.hypot(shape[0] * sy, shape[1] * sx)


def _surface_distances(p: np.ndarray, t: np.ndarray, spacing: Spacing | None) -> tuple[float, float]:
    """HD95 and ASSD from MONAI for two non-empty HxW masks."""
    # Only the foreground channel is passed, as [1, 1, H, W] with include_background=True: MONAI's
    # one-hot convention with include_background=False would drop channel 0 and score exactly this one.
    yp = torch.from_numpy(p)[None, None].float()
    yt = torch.from_numpy(t)[None, None].float()
    with warnings.catch_warnings():
        # MONAI's own internals call a deprecated get_mask_edges argument; nothing a caller can act on.
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*", category=FutureWarning)
        hd95 = compute_hausdorff_distance(yp, yt, include_background=True, percentile=95, spacing=spacing)
        assd = compute_average_surface_distance(
            yp, yt, include_background=True, symmetric=True, spacing=spacing
        )
    return float(hd95[0, 0]), float(assd[0, 0])


def segmentation_metrics(
    pred: np.ndarray | torch.Tensor,
    target: np.ndarray | torch.Tensor,
    spacing: tuple[float, float] | None = None,
) -> dict[str, float]:
    """Dice, IoU, HD95 and ASSD of one boolean HxW prediction against its truth.

    Distances are in pixels, or in the units of ``spacing`` (row, col) when given. Never NaN or inf:
    see the module docstring for the empty-mask policy.
    """
    p, t = _as_bool_numpy(pred), _as_bool_numpy(target)
    if p.shape != t.shape:
        raise ValueError(f"pred and target shapes differ: pred {p.shape} vs target {t.shape}")
    if p.ndim != 2:
        raise ValueError(f"expected HxW masks, got shape {p.shape}")
    checked_spacing = _check_spacing(spacing)

    scores = overlap(p, t)  # dice / iou, already with the same both-empty / one-empty policy
    p_any, t_any = bool(p.any()), bool(t.any())
    if not p_any and not t_any:
        hd95 = assd = 0.0
    elif p_any != t_any:
        # Worst case rather than NaN, so a missed (or hallucinated) lesion is counted, and counted as bad.
        hd95 = assd = _diagonal(p.shape, checked_spacing)
    else:
        hd95, assd = _surface_distances(p, t, checked_spacing)
    return {"dice": scores["dice"], "iou": scores["iou"], "hd95": hd95, "assd": assd}


def batch_segmentation_metrics(
    preds: np.ndarray | torch.Tensor,
    targets: np.ndarray | torch.Tensor,
    spacing: tuple[float, float] | None = None,
) -> list[dict[str, float]]:
    """:func:`segmentation_metrics` for each image of a [B, H, W] batch; one dict per image."""
    p, t = _as_bool_numpy(preds), _as_bool_numpy(targets)
    if p.shape != t.shape:
        raise ValueError(f"preds and targets shapes differ: preds {p.shape} vs targets {t.shape}")
    if p.ndim != 3:
        raise ValueError(f"expected [B, H, W] masks, got shape {p.shape}")
    return [segmentation_metrics(pi, ti, spacing) for pi, ti in zip(p, t)]
