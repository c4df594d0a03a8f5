"""Overlap of a predicted mask with the truth, and where a saliency map puts its weight.

Pixels marked IGNORE (255) in a pseudo-mask are left out of the comparison: they are the pixels the
weak label abstains on, and counting them either way would reward or punish the abstention itself.
Empty-mask policy: both empty -> dice = iou = 1 (nothing to find, nothing found); one empty -> 0.
"""

from __future__ import annotations

import numpy as np

IGNORE = 255


def overlap(pred: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None) -> dict[str, float]:
    """Dice and IoU of boolean masks over the ``valid`` pixels (all pixels by default)."""
    p = np.asarray(pred).astype(bool)
    t = np.asarray(truth).astype(bool)
    if valid is not None:
        p = p & valid
        t = t & valid
    inter = float(np.count_nonzero(p & t))
    sp, st = float(np.count_nonzero(p)), float(np.count_nonzero(t))
    if sp + st == 0:
        return {"dice": 1.0, "iou": 1.0}
    return {"dice": 2 * inter / (sp + st), "iou": inter / (sp + st - inter)}


def pseudo_mask_overlap(mask: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Dice / IoU of a {0, 1, 255} pseudo-mask's foreground, ignoring its 255 pixels, plus the
    fraction of pixels it abstained on."""
    mask = np.asarray(mask)
    valid = mask != IGNORE
    scores = overlap(mask == 1, truth, valid)
    scores["ignored"] = float(1.0 - valid.mean()) if mask.size else 0.0
    return scores


def saliency_scores(cam: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Where a saliency map puts its weight relative to a truth mask (Quantus' definitions).

    * ``pointing``: is the map's maximum inside the truth (PointingGame; the first maximum in raster
      order when there are ties).
    * ``relevance_mass``: share of the map's total inside the truth (RelevanceMassAccuracy).
    * ``relevance_rank``: with K = the truth's pixel count, the share of the map's K highest pixels
      that fall inside the truth (RelevanceRankAccuracy; ties broken by raster order).

    All are NaN when the truth is empty: there is nothing to point at.
    """
    cam = np.asarray(cam, dtype=np.float64)
    t = np.asarray(truth).astype(bool)
    if not t.any():
        return {"pointing": float("nan"), "relevance_mass": float("nan"), "relevance_rank": float("nan")}
    pointing = float(t.flat[int(np.argmax(cam))])
    total = float(cam.sum())
    mass = float(cam[t].sum() / total) if total > 0 else 0.0
    k = int(np.count_nonzero(t))
    top = np.argsort(-cam.ravel(), kind="stable")[:k]
    rank = float(np.count_nonzero(t.ravel()[top]) / k)
    return {"pointing": pointing, "relevance_mass": mass, "relevance_rank": rank}


def energy_outside(cam: np.ndarray, region: np.ndarray) -> float:
    """Share of a non-negative map's total outside ``region`` (field of view, breast): a model
    looking at the black border or the label scores high. NaN for an all-zero map."""
    cam = np.asarray(cam, dtype=np.float64)
    total = float(cam.sum())
    if total <= 0:
        return float("nan")
    return float(cam[~np.asarray(region).astype(bool)].sum() / total)
