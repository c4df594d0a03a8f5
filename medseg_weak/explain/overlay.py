"""Overlay pictures: a CAM heat map over the image with the pseudo-mask's outline, as RGB uint8.

Composited with numpy (no matplotlib figure per image), because it runs once per image of a data set.
"""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from skimage.segmentation import find_boundaries

_JET = (colormaps["jet"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)


def overlay(
    image: np.ndarray, cam: np.ndarray, mask: np.ndarray | None = None, alpha: float = 0.4
) -> np.ndarray:
    """``image`` in [0, 1] (HxW or HxWx3), ``cam`` in [0, 1] (HxW), ``mask`` {0, 1, 255} (HxW)."""
    grey = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=-1)
    base = np.clip(grey * 255.0, 0, 255)
    heat = _JET[np.clip(cam * 255.0, 0, 255).astype(np.uint8)].astype(np.float32)
    out = ((1 - alpha) * base + alpha * heat).astype(np.uint8)
    if mask is not None:
        out[find_boundaries(mask == 1, mode="inner")] = (255, 255, 255)  # pseudo-mask outline in white
        out[mask == 255] = (out[mask == 255] * 0.5).astype(np.uint8)  # the ignore band darkened
    return out
