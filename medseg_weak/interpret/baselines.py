"""Baseline maps every CAM method is compared with: a random map and a centre-bias map per image.

A method is only worth reading if it beats maps that know nothing about the model. ``random`` is
uniform noise (seeded per call, so reruns agree); ``centre`` is an isotropic Gaussian at the centroid
of the image's region (field of view / breast) when one is given, else at the image centre, with
sigma = a quarter of the image side: the "the object is in the middle" prior that many saliency maps
secretly are. One function per baseline, registered by name.

The "no better than random" rule lives here too, so every report applies the same one.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from medseg_weak.registry import Registry

# (n, (H, W), regions [N, H, W] bool or None, seed) -> [N, H, W] float32 maps in [0, 1]
BaselineMap = Callable[[int, tuple[int, int], torch.Tensor | None, int], torch.Tensor]
BASELINES: Registry[BaselineMap] = Registry("baseline map")
CENTRE_SIGMA_FRACTION = 0.25


@BASELINES.register("random")
def random_maps(n: int, size: tuple[int, int], regions: torch.Tensor | None, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, *size, generator=generator)


@BASELINES.register("centre")
def centre_maps(n: int, size: tuple[int, int], regions: torch.Tensor | None, seed: int) -> torch.Tensor:
    h, w = size
    ys = torch.arange(h, dtype=torch.float32)[None, :, None]
    xs = torch.arange(w, dtype=torch.float32)[None, None, :]
    cy = torch.full((n, 1, 1), (h - 1) / 2)
    cx = torch.full((n, 1, 1), (w - 1) / 2)
    if regions is not None:
        r = regions.float()
        area = r.sum(dim=(1, 2), keepdim=True)
        has = area > 0
        cy = torch.where(has, (r * ys).sum(dim=(1, 2), keepdim=True) / area.clamp_min(1), cy)
        cx = torch.where(has, (r * xs).sum(dim=(1, 2), keepdim=True) / area.clamp_min(1), cx)
    sigma = CENTRE_SIGMA_FRACTION * max(h, w)
    return torch.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * sigma**2))


#: How many standard errors a method must beat random by: with 2, a second random map is flagged
#: against the first in about 98 % of data sets (one-sided), with 1 in only about 84 %.
FLAG_SE = 2.0


def no_better_than_random(method_auc: np.ndarray, random_auc: np.ndarray) -> bool:
    """The flag rule: paired over images, d = random's deletion AUC - the method's (positive: the
    method removes the evidence faster). Flagged when mean(d) <= FLAG_SE x SE(d), i.e. the method's
    deletion AUC is not below random's by more than two standard errors (always with < 2 images).
    """
    d = np.asarray(random_auc, dtype=np.float64) - np.asarray(method_auc, dtype=np.float64)
    d = d[np.isfinite(d)]
    if d.size < 2:
        return True
    se = float(d.std(ddof=1)) / math.sqrt(d.size)
    return bool(d.mean() <= FLAG_SE * se)
