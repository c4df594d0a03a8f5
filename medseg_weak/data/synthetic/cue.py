"""The spurious cue of the mammography benchmark: a radiopaque skin marker and when an image gets one.

See :mod:`medseg_weak.data.synthetic.mammo` for how the cue's strength relates it to density.
"""

from __future__ import annotations

import numpy as np

from medseg_weak.data.synthetic.anatomy import Anatomy
from medseg_weak.data.synthetic.vendors import VendorProfile

CUE_SHAPES: tuple[str, ...] = ("ring", "square", "cross", "triangle")


def _shape_mask(shape_name: str, radius: int) -> np.ndarray:
    """A small binary marker of the given shape, (2r+1) pixels square."""
    dy, dx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    r = float(radius)
    if shape_name == "ring":
        dist = np.hypot(dy, dx)
        return (dist <= r) & (dist >= 0.5 * r)
    if shape_name == "square":
        return np.ones_like(dy, dtype=bool)
    if shape_name == "cross":
        return (np.abs(dy) <= 0.3 * r) | (np.abs(dx) <= 0.3 * r)
    if shape_name == "triangle":
        return np.abs(dx) <= (dy + r) / 2.0
    raise ValueError(f"unknown cue shape '{shape_name}' (valid: {', '.join(CUE_SHAPES)})")


def draw_cue(signal: np.ndarray, anatomy: Anatomy, profile: VendorProfile, rng: np.random.Generator) -> None:
    """Paint the hospital's radiopaque skin marker inside the breast near the skin line."""
    h, w = signal.shape
    radius = max(2, round(0.026 * h))
    half_height = 0.42 * h
    row = round(anatomy.nipple[0] + (profile.cue_row + rng.uniform(-0.05, 0.05)) * half_height)
    row = int(np.clip(row, radius, h - radius - 1))
    col = round(anatomy.extent[row] - 0.05 * h - radius)
    col = int(np.clip(col, radius, w - radius - 1))
    patch = _shape_mask(profile.cue_shape, radius)
    region = signal[row - radius : row + radius + 1, col - radius : col + radius + 1]
    region[patch] = 0.95  # metal: as bright as anything in the breast


def cue_probability(hospital: int, label: str, strength: float) -> float:
    dense = label in ("C", "D")
    favoured = dense if hospital % 2 == 0 else not dense
    return 0.5 + strength / 2.0 if favoured else 0.5 - strength / 2.0
