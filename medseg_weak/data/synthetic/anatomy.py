"""Breast anatomy before any vendor processing: silhouette, pectoral muscle, dense tissue, signal.

Drawn with the chest wall on the left; right breasts are mirrored when rendered. The dense mask is
the ground truth of the benchmark, drawn here to cover a target fraction of the breast tissue.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw
from scipy import ndimage

from medseg_weak.data.synthetic.fields import fractal_noise, radial_streaks


@dataclass(frozen=True)
class Anatomy:
    """A breast before any vendor processing, chest wall on the left.

    ``base`` is the display signal of everything except glandular tissue (fat, pectoral muscle, skin),
    ``gland`` the glandular signal that a vendor's contrast scales, both in [0, 1] (bright = dense).
    """

    base: np.ndarray
    gland: np.ndarray
    breast: np.ndarray
    pectoral: np.ndarray
    dense: np.ndarray
    extent: np.ndarray
    nipple: tuple[float, float]

    @property
    def dense_fraction(self) -> float:
        return float(self.dense.sum()) / max(1, int(self.tissue.sum()))

    @property
    def tissue(self) -> np.ndarray:
        """The breast area the density fraction is measured in: silhouette minus pectoral muscle."""
        return self.breast & ~self.pectoral


def _wobble(rng: np.random.Generator, n: int, amplitude: float) -> np.ndarray:
    """Smooth 1-D noise so that silhouettes are not perfect ellipses."""
    return amplitude * ndimage.gaussian_filter1d(rng.standard_normal(n), sigma=n / 12, mode="nearest") * 3.0


def _silhouette(rng: np.random.Generator, h: int, w: int, view: str, size: float) -> tuple[np.ndarray, float]:
    """Per-row breast extent from the chest wall (0 = no breast) and the nipple row."""
    rows = np.arange(h, dtype=np.float64)
    reach = w * size * rng.uniform(0.66, 0.78)
    fullness = rng.uniform(0.75, 1.0)
    if view == "CC":
        nipple_row = h * rng.uniform(0.47, 0.53)
        half = h * size * rng.uniform(0.40, 0.46)
        t = np.clip((rows - nipple_row) / half, -1.0, 1.0)
        extent = reach * np.sqrt(1.0 - t**2) ** fullness * (1.0 + 0.08 * rng.uniform(-1, 1) * t)
    else:
        nipple_row = h * rng.uniform(0.54, 0.62)
        fold = min(h - 2.0, h * rng.uniform(0.90, 0.98))
        top = w * rng.uniform(0.36, 0.46)
        below = np.clip((rows - nipple_row) / (fold - nipple_row), 0.0, 1.0)
        above = np.clip((nipple_row - rows) / nipple_row, 0.0, 1.0)
        lower = reach * np.sqrt(1.0 - below**2) ** fullness
        upper = top + (reach - top) * np.sqrt(1.0 - above**2)
        extent = np.where(rows >= nipple_row, lower, upper)
    extent = extent + _wobble(rng, h, 0.012 * reach) * (extent > 0)
    return np.clip(extent, 0.0, w - 2.0), float(nipple_row)


def _pectoral(rng: np.random.Generator, h: int, w: int, extent_top: float) -> np.ndarray:
    """The MLO pectoral muscle: a slightly convex triangle in the top chest-wall corner."""
    width = max(2.0, extent_top * rng.uniform(0.55, 0.85))
    depth = h * rng.uniform(0.30, 0.45)
    bulge = rng.uniform(0.95, 1.35)
    rows, cols = np.ogrid[0:h, 0:w]
    return (cols / width) ** bulge + (rows / depth) ** bulge < 1.0


def _gland_prior(
    rng: np.random.Generator,
    shape: tuple[int, int],
    view: str,
    nipple: tuple[float, float],
    skin_dist: np.ndarray,
) -> np.ndarray:
    """Where glandular tissue tends to be: a cone from behind the nipple widening to the chest wall,
    sparing the subcutaneous and retroglandular fat."""
    h, w = shape
    n_row, n_col = nipple
    chest_row = n_row + h * (rng.uniform(-0.04, 0.04) if view == "CC" else -rng.uniform(0.10, 0.20))
    half_width = h * rng.uniform(0.18, 0.28)
    rows, cols = np.ogrid[0:h, 0:w]
    depth = np.clip(cols / max(n_col, 1.0), 0.0, 1.2)
    axis = n_row + (chest_row - n_row) * (1.0 - depth)
    spread = half_width * (1.0 - 0.55 * np.clip(depth, 0.0, 1.0))
    cone = np.exp(-(((rows - axis) / spread) ** 2))
    subcutaneous = 1.0 - np.exp(-skin_dist / (0.05 * h))
    retroglandular = 1.0 - 0.5 * np.exp(-cols / (0.05 * w))
    return (cone * subcutaneous * retroglandular).astype(np.float32)


def draw_anatomy(
    rng: np.random.Generator, shape: tuple[int, int], view: str, target_fraction: float, size: float = 1.0
) -> Anatomy:
    """Draw one breast whose dense mask covers ``target_fraction`` of its tissue area.

    The dense mask is the smooth field (prior cone + 1/f blobs) thresholded at the quantile that
    gives the target fraction inside the breast, so the fraction is hit almost exactly.
    """
    h, w = shape
    extent, nipple_row = _silhouette(rng, h, w, view, size)
    cols = np.arange(w)[None, :]
    breast = cols < extent[:, None]
    pectoral = _pectoral(rng, h, w, float(extent[0])) & breast if view == "MLO" else np.zeros_like(breast)
    tissue = breast & ~pectoral
    nipple = (nipple_row, float(extent[round(nipple_row)]))
    skin_dist = ndimage.distance_transform_edt(breast).astype(np.float32)

    prior = _gland_prior(rng, shape, view, nipple, skin_dist)
    field = rng.uniform(2.0, 3.5) * prior + fractal_noise(rng, shape, 3.5, 12.0)
    field += 0.35 * fractal_noise(rng, shape, 2.5, 30.0)
    inside = field[tissue]
    threshold = float(np.quantile(inside, 1.0 - float(np.clip(target_fraction, 0.0, 1.0))))
    dense = (field > threshold) & tissue

    base, gland = _tissue_signal(
        rng, shape, breast, pectoral, skin_dist, nipple, field - threshold, inside.std()
    )
    return Anatomy(
        base=base, gland=gland, breast=breast, pectoral=pectoral, dense=dense, extent=extent, nipple=nipple
    )


def _vessels(rng: np.random.Generator, shape: tuple[int, int], nipple: tuple[float, float]) -> np.ndarray:
    """A few thin tortuous vessels running from the chest wall toward the nipple, in [0, 1]."""
    h, w = shape
    canvas = PILImage.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    steps = np.linspace(0.0, 1.0, 48)
    for _ in range(int(rng.integers(2, 5))):
        start = np.array([nipple[0] + rng.uniform(-0.35, 0.35) * h, 0.0])
        end = np.array([nipple[0] + rng.uniform(-0.12, 0.12) * h, nipple[1] * rng.uniform(0.55, 0.9)])
        path = start + steps[:, None] * (end - start)
        path[:, 0] += 0.03 * h * np.cumsum(ndimage.gaussian_filter1d(rng.standard_normal(48), 3.0)) / 4.0
        draw.line([(float(c), float(r)) for r, c in path], fill=255, width=max(1, round(h / 300)))
    return ndimage.gaussian_filter(np.asarray(canvas, dtype=np.float32) / 255.0, sigma=max(0.5, h / 700))


def _tissue_signal(
    rng: np.random.Generator,
    shape: tuple[int, int],
    breast: np.ndarray,
    pectoral: np.ndarray,
    skin_dist: np.ndarray,
    nipple: tuple[float, float],
    gland_field: np.ndarray,
    field_std: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Display signal of fat, muscle and skin (``base``) and of glandular tissue (``gland``).

    ``gland_field`` is positive inside the dense mask; a logistic of it gives the soft, textured
    edge of glandular tissue whose half-way level is exactly the mask boundary.
    """
    h = shape[0]
    alpha = 1.0 / (1.0 + np.exp(-gland_field / (0.3 * field_std)))
    streaks = radial_streaks(rng, shape, nipple) * (0.25 + 0.75 * alpha)
    fat_texture = fractal_noise(rng, shape, 2.5, 40.0)
    gland_texture = fractal_noise(rng, shape, 1.8, 80.0)
    thickness = 1.0 - np.exp(-skin_dist / (h * rng.uniform(0.035, 0.06)))
    muscle = ndimage.gaussian_filter(pectoral.astype(np.float32), sigma=max(0.7, h / 350))

    fat = 0.28 + 0.03 * fat_texture + 0.01 * streaks + 0.05 * _vessels(rng, shape, nipple)
    gland = alpha * (0.36 + 0.06 * gland_texture + 0.02 * streaks)
    rows, cols = np.ogrid[0 : shape[0], 0 : shape[1]]
    muscle_signal = 0.62 - 0.08 * np.hypot(rows / shape[0], cols / shape[1]) + 0.03 * fat_texture
    skin = 0.12 * np.exp(-skin_dist / max(1.0, h / 300))
    base = thickness * ((1.0 - muscle) * fat + muscle * muscle_signal) + skin
    gland = thickness * (1.0 - muscle) * gland
    base[~breast] = 0.0
    gland[~breast] = 0.0
    return base.astype(np.float32), gland.astype(np.float32)
