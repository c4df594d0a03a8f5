"""The built-in multi-hospital mammography benchmark: synthetic DICOM mammograms with dense-tissue masks.

Why synthetic: tests, docs and the demo need data with a pixel-exact ground truth for the thing the
pipeline only ever sees as an image-level label (BI-RADS density), across hospitals that differ the
way real vendors do, without downloading anything.

Conventions other modules rely on:

* Orientation: a LEFT breast has its chest wall on the left image edge (column 0) and the nipple
  pointing right; a RIGHT breast is the mirror image. Burned-in text (e.g. "L MLO") and a small lead
  marker sit in the top corner on the nipple side, outside the breast.
* Density: the ground-truth mask is the dense (fibroglandular) tissue; the dense fraction is
  ``dense pixels / breast pixels`` where the breast area EXCLUDES the pectoral muscle of MLO views
  (the muscle is bright but is not breast tissue, and BI-RADS density describes breast tissue only).
  Labels follow the fraction: A < 25 %, B 25-50 %, C 50-75 %, D >= 75 %, computed from the mask
  actually drawn, never from the target the generator aimed at.
* Spurious cue (``spurious_cue`` = strength s in [0, 1]): a hospital-specific radiopaque skin marker
  (a ring, square, cross or triangle, each hospital its own shape and place) drawn INSIDE the breast
  near the skin line, so cropping the breast or removing burned-in labels cannot remove it. In
  hospitals with an even index (H1, H3, ...) it appears on dense (C/D) images with probability
  0.5 + s/2 and on fatty (A/B) images with 0.5 - s/2; in odd-index hospitals the other way round.
  s = 0 draws no cue at all. The cue never changes the mask, and because it has its own random
  stream an image with and without the cue differ only at the marker's pixels.
  Whether an image carries the cue is stored in its mask PNG (see :func:`read_mask_truth`).
* Populations: each hospital has its own density-class mix (:class:`VendorProfile.density_mix`);
  a patient's class comes from a golden-ratio sequence over that mix (so even a few patients cover
  it), and all four views share the patient's target fraction up to small per-breast/per-view noise.

Files: ``images/<id>.dcm`` (real DICOM, Modality MG) and ``masks/<id>.png`` (uint8 0/255, the image's
geometry). The PNG also carries the breast/dense pixel counts and the cue flag as text chunks, so a
resumed run can rebuild every record from the files without redrawing. An image depends only on
(seed, hospital, patient, view, height, cue strength), not on ``n_per_hospital`` or ``hospitals``,
so growing a data set in place reuses what is there.
"""

from __future__ import annotations

import math
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont, PngImagePlugin
from scipy import fft as sp_fft
from scipy import ndimage

from medseg_weak.data.manifest import DENSITY_LABELS, Record
from medseg_weak.data.synthetic.dicom_writer import MammoDicomInfo, write_mammo_dicom
from medseg_weak.errors import ConfigError, InputError
from medseg_weak.io_utils import atomic_write

#: Upper dense-fraction bound of classes A, B and C (D is everything above).
DENSITY_BOUNDS: tuple[float, float, float] = (0.25, 0.50, 0.75)
#: Target dense fractions drawn per class, kept away from the bounds so labels rarely flip.
_CLASS_FRACTIONS: tuple[tuple[float, float], ...] = ((0.05, 0.21), (0.29, 0.46), (0.54, 0.71), (0.79, 0.92))
#: Image order within a patient: the usual hanging order RCC, LCC, RMLO, LMLO.
VIEWS: tuple[tuple[str, str], ...] = (("R", "CC"), ("L", "CC"), ("R", "MLO"), ("L", "MLO"))
CUE_SHAPES: tuple[str, ...] = ("ring", "square", "cross", "triangle")
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0
_REF_HEIGHT = 512.0


# --------------------------------------------------------------------------------------------------
# Vendor / hospital profiles


@dataclass(frozen=True)
class VendorProfile:
    """How one hospital's mammograms differ from another's: the vendor's processing and population.

    ``curve`` maps the display signal s in [0, 1] to stored values: "log" uses
    log1p(k s)/log1p(k) with k = ``curve_param``, "gamma" uses s ** ``curve_param``. ``blur`` is the
    Gaussian sigma in pixels at a 512-row image. ``window``: write a fixed Window Center/Width
    (:func:`vendor_window`); ``rescale``: (slope, intercept) tags; ``rle``: RLE Lossless pixel data.
    ``density_mix`` is the hospital's population of
    density classes A-D. ``cue_shape``/``cue_row`` place the hospital's spurious marker (row offset
    from the nipple in units of the breast's half-height; positive is below).
    """

    manufacturer: str
    model: str
    curve: str
    curve_param: float
    bits_stored: int
    monochrome1: bool
    noise: float
    blur: float
    contrast: float
    height_scale: float
    aspect: float
    detector_height_mm: float
    window: bool
    rescale: tuple[float, float] | None
    rle: bool
    density_mix: tuple[float, float, float, float]
    cue_shape: str
    cue_row: float


BASE_PROFILES: tuple[VendorProfile, ...] = (
    VendorProfile(
        manufacturer="Northwind Medical", model="NW-Mammo 3000", curve="log", curve_param=6.0,
        bits_stored=14, monochrome1=False, noise=0.012, blur=0.6, contrast=1.0, height_scale=1.0,
        aspect=0.80, detector_height_mm=240.0, window=True, rescale=None, rle=False,
        density_mix=(0.30, 0.35, 0.25, 0.10), cue_shape="ring", cue_row=0.55,
    ),
    VendorProfile(
        manufacturer="Helix Radiology Systems", model="Helix DM-12", curve="gamma", curve_param=0.75,
        bits_stored=12, monochrome1=True, noise=0.025, blur=1.2, contrast=0.85, height_scale=0.9,
        aspect=0.76, detector_height_mm=290.0, window=False, rescale=None, rle=False,
        density_mix=(0.10, 0.25, 0.35, 0.30), cue_shape="square", cue_row=-0.45,
    ),
    VendorProfile(
        manufacturer="Orion Imaging", model="Orion FD-16", curve="log", curve_param=2.0,
        bits_stored=16, monochrome1=False, noise=0.015, blur=0.8, contrast=1.15, height_scale=1.15,
        aspect=0.82, detector_height_mm=240.0, window=False, rescale=(0.5, 100.0), rle=True,
        density_mix=(0.20, 0.30, 0.30, 0.20), cue_shape="cross", cue_row=0.35,
    ),
    VendorProfile(
        manufacturer="Kestrel Diagnostics", model="Kestrel K1", curve="gamma", curve_param=1.25,
        bits_stored=12, monochrome1=False, noise=0.02, blur=0.4, contrast=1.0, height_scale=1.05,
        aspect=0.78, detector_height_mm=270.0, window=True, rescale=None, rle=False,
        density_mix=(0.15, 0.40, 0.35, 0.10), cue_shape="triangle", cue_row=-0.30,
    ),
)  # fmt: skip


def hospital_name(index: int) -> str:
    """Hospital (domain) names are "H1", "H2", ... for indices 0, 1, ..."""
    return f"H{index + 1}"


def hospital_profile(index: int) -> VendorProfile:
    """The profile of hospital ``index``: the base profiles cycled, each later cycle a variant.

    Variants keep the vendor's file format (so the reader paths stay covered) but change noise,
    blur, size, contrast, population and the cue's place, so no two hospitals are identical.
    """
    base = BASE_PROFILES[index % len(BASE_PROFILES)]
    cycle = index // len(BASE_PROFILES)
    if cycle == 0:
        return base
    return replace(
        base,
        model=f"{base.model} rev{cycle + 1}",
        noise=base.noise * (1.0 + 0.25 * cycle),
        blur=base.blur * (1.0 + 0.2 * cycle),
        contrast=base.contrast * (0.92 if cycle % 2 else 1.08),
        height_scale=min(1.15, max(0.9, base.height_scale + (0.07 if cycle % 2 else -0.07))),
        density_mix=tuple(np.roll(base.density_mix, cycle).tolist()),
        cue_row=-base.cue_row,
    )


def density_label(fraction: float) -> str:
    """BI-RADS density class of a dense fraction (of the breast area without pectoral muscle)."""
    return DENSITY_LABELS[int(np.searchsorted(DENSITY_BOUNDS, fraction, side="right"))]


# --------------------------------------------------------------------------------------------------
# Random fields


def _fractal_noise(
    rng: np.random.Generator, shape: tuple[int, int], exponent: float, cutoff: float
) -> np.ndarray:
    """A unit-variance Gaussian field with power ~ 1/f**exponent, low-passed at ``cutoff``.

    Frequencies are in cycles per image height, so textures look alike at every image size; one FFT
    replaces the stack of Gaussian filters (and any per-pixel loop) a multi-scale field would need.
    """
    white = rng.standard_normal(shape, dtype=np.float32)
    field = sp_fft.irfft2(sp_fft.rfft2(white) * _spectral_gain(shape, exponent, cutoff), s=shape)
    field -= field.mean()
    return (field / (field.std() + 1e-8)).astype(np.float32)


@lru_cache(maxsize=64)
def _spectral_gain(shape: tuple[int, int], exponent: float, cutoff: float) -> np.ndarray:
    """The amplitude filter of :func:`_fractal_noise`, cached: every image of a vendor shares a shape."""
    h, w = shape
    fy = np.fft.fftfreq(h).astype(np.float32)[:, None] * h
    fx = np.fft.rfftfreq(w).astype(np.float32)[None, :] * h
    f2 = fy**2 + fx**2
    gain = (f2 + 1.0) ** (-exponent / 4.0) * np.exp(-f2 / cutoff**2)
    gain.setflags(write=False)
    return gain


def _radial_streaks(
    rng: np.random.Generator, shape: tuple[int, int], centre: tuple[float, float]
) -> np.ndarray:
    """Thin streaks converging on the nipple (ducts and Cooper's ligaments), unit variance.

    Noise smoothed strongly along the radius and barely across angles, sampled in polar coordinates
    around ``centre`` (row, col).
    """
    h, w = shape
    n_angle, n_radius = max(64, int(1.2 * h)), 48
    grid = ndimage.gaussian_filter(
        rng.standard_normal((n_angle, n_radius)).astype(np.float32),
        sigma=(0.8, 3.0),
        mode=("wrap", "nearest"),
    )
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = np.arctan2(rows - centre[0], centre[1] - cols)
    radius = np.hypot(rows - centre[0], cols - centre[1]) / math.hypot(h, w)
    coords = np.stack([(angle + np.pi) / (2 * np.pi) * (n_angle - 1), radius * (n_radius - 1)])
    streaks = ndimage.map_coordinates(grid, coords, order=1, mode="nearest")
    streaks = (streaks - streaks.mean()) / (streaks.std() + 1e-8)
    # fade out close to the nipple, where every streak would meet in an artificial starburst
    return streaks * (1.0 - np.exp(-((radius * math.hypot(h, w) / (0.12 * h)) ** 2)))


# --------------------------------------------------------------------------------------------------
# Anatomy (drawn with the chest wall on the left; right breasts are mirrored afterwards)


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
    field = rng.uniform(2.0, 3.5) * prior + _fractal_noise(rng, shape, 3.5, 12.0)
    field += 0.35 * _fractal_noise(rng, shape, 2.5, 30.0)
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
    streaks = _radial_streaks(rng, shape, nipple) * (0.25 + 0.75 * alpha)
    fat_texture = _fractal_noise(rng, shape, 2.5, 40.0)
    gland_texture = _fractal_noise(rng, shape, 1.8, 80.0)
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


# --------------------------------------------------------------------------------------------------
# Vendor rendering


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


def _draw_cue(signal: np.ndarray, anatomy: Anatomy, profile: VendorProfile, rng: np.random.Generator) -> None:
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


def _vendor_curve(signal: np.ndarray, profile: VendorProfile) -> np.ndarray:
    s = np.clip(signal, 0.0, 1.0)
    if profile.curve == "log":
        return np.log1p(profile.curve_param * s) / math.log1p(profile.curve_param)
    if profile.curve == "gamma":
        return s**profile.curve_param
    raise ValueError(f"unknown intensity curve '{profile.curve}' (valid: log, gamma)")


@lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (ImportError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _burn_in_labels(values: np.ndarray, laterality: str, view: str) -> None:
    """Burn "L MLO"-style text and a lead marker into the top corner on the nipple side."""
    h, w = values.shape
    canvas = PILImage.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    font = _font(max(8, round(0.04 * h)))
    text = f"{laterality} {view}"
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    margin = max(2, round(0.03 * h))
    x = w - margin - (right - left) if laterality == "L" else margin
    draw.text((x - left, margin - top), text, fill=255, font=font)
    side = max(2, round(0.02 * h))
    y = margin + (bottom - top) + side
    x_box = w - margin - side if laterality == "L" else margin
    draw.rectangle((x_box, y, x_box + side, y + side), fill=255)
    values[np.asarray(canvas) > 127] = 1.0


def render(
    anatomy: Anatomy, profile: VendorProfile, rng: np.random.Generator, laterality: str, view: str, cue: bool
) -> np.ndarray:
    """Stored uint16 pixels, as they go into the DICOM.

    Order follows the physics loosely: anatomy (+ marker) -> detector blur -> vendor curve -> noise
    -> mirror for right breasts -> burned-in labels -> quantisation -> MONOCHROME1 inversion.
    """
    h = anatomy.base.shape[0]
    # separate streams, so an image with the cue differs from one without only at the marker
    cue_rng, noise_rng = rng.spawn(2)
    signal = anatomy.base + profile.contrast * anatomy.gland
    if cue:
        _draw_cue(signal, anatomy, profile, cue_rng)
    signal = ndimage.gaussian_filter(signal, sigma=profile.blur * h / _REF_HEIGHT)
    values = _vendor_curve(signal, profile)
    values += (
        profile.noise * np.sqrt(values + 0.05) * noise_rng.standard_normal(values.shape, dtype=np.float32)
    )
    values = np.clip(values, 0.0, 1.0)
    if laterality == "R":
        values = values[:, ::-1]
    _burn_in_labels(values, laterality, view)
    top = 2**profile.bits_stored - 1
    stored = np.rint(values * top).astype(np.uint16)
    if profile.monochrome1:
        stored = (top - stored).astype(np.uint16)
    return stored


def vendor_window(profile: VendorProfile) -> tuple[float, float] | None:
    """The vendor's fixed (center, width) in modality units, or None if it writes no window.

    Fixed per vendor, not fitted to each image: a window stretched to every breast's own range
    would make an all-fat and an all-dense breast look alike, erasing the density signal.
    """
    if not profile.window:
        return None
    top = 2**profile.bits_stored - 1
    low, high = (float(v) * top for v in _vendor_curve(np.array([0.05, 0.85]), profile))
    if profile.monochrome1:
        low, high = top - high, top - low
    slope, intercept = profile.rescale or (1.0, 0.0)
    low, high = slope * low + intercept, slope * high + intercept
    return float(round((low + high) / 2.0)), float(round(high - low))


def image_shape(profile: VendorProfile, height: int) -> tuple[int, int]:
    """Rows and columns of this vendor's images for a nominal ``height`` (even numbers)."""
    rows = max(32, 2 * round(height * profile.height_scale / 2))
    return rows, max(24, 2 * round(rows * profile.aspect / 2))


@dataclass(frozen=True)
class Mammogram:
    """One drawn image: stored pixels as they go into the DICOM, its masks, and its window."""

    pixels: np.ndarray
    dense: np.ndarray
    tissue: np.ndarray
    window: tuple[float, float] | None

    @property
    def dense_fraction(self) -> float:
        return float(self.dense.sum()) / max(1, int(self.tissue.sum()))


def draw_mammogram(
    rng: np.random.Generator,
    profile: VendorProfile,
    laterality: str,
    view: str,
    target_fraction: float,
    cue: bool,
    height: int,
    size: float = 1.0,
) -> Mammogram:
    """Draw one mammogram in final orientation (a pure function of its arguments and ``rng``)."""
    anatomy_rng, render_rng = rng.spawn(2)
    anatomy = draw_anatomy(anatomy_rng, image_shape(profile, height), view, target_fraction, size)
    return _finish(anatomy, profile, render_rng, laterality, view, cue)


def _finish(
    anatomy: Anatomy, profile: VendorProfile, rng: np.random.Generator, laterality: str, view: str, cue: bool
) -> Mammogram:
    pixels = render(anatomy, profile, rng, laterality, view, cue)
    flip = (slice(None), slice(None, None, -1)) if laterality == "R" else (slice(None), slice(None))
    return Mammogram(
        pixels=pixels, dense=anatomy.dense[flip], tissue=anatomy.tissue[flip], window=vendor_window(profile)
    )


# --------------------------------------------------------------------------------------------------
# Mask files with their truth


@dataclass(frozen=True)
class MaskTruth:
    """What a mask PNG records besides its pixels: counts for the density fraction and the cue flag.

    ``params`` names the generator settings that drew the image (seed, height, cue strength), so a
    rerun with other settings in the same folder redraws it instead of reusing it.
    """

    dense_pixels: int
    tissue_pixels: int
    cue: bool
    params: str = ""

    @property
    def dense_fraction(self) -> float:
        return self.dense_pixels / max(1, self.tissue_pixels)

    @property
    def label(self) -> str:
        return density_label(self.dense_fraction)


def write_mask(path: Path, dense: np.ndarray, truth: MaskTruth) -> Path:
    info = PngImagePlugin.PngInfo()
    info.add_text("medseg_dense_pixels", str(truth.dense_pixels))
    info.add_text("medseg_tissue_pixels", str(truth.tissue_pixels))
    info.add_text("medseg_cue", str(int(truth.cue)))
    info.add_text("medseg_params", truth.params)
    image = PILImage.fromarray(np.where(dense, 255, 0).astype(np.uint8), mode="L")
    return atomic_write(Path(path), lambda tmp: image.save(tmp, format="PNG", pnginfo=info))


def read_mask_truth(path: Path) -> MaskTruth:
    """Read a synthetic mask's truth, recounting the dense pixels from the mask itself.

    Raises :class:`InputError` if the file is unreadable, lacks the text chunks, or its pixels no
    longer match the recorded count (so a resumed run redraws it).
    """
    try:
        with PILImage.open(path) as image:
            text = dict(getattr(image, "text", {}))
            mask = np.asarray(image)
        truth = MaskTruth(
            dense_pixels=int(text["medseg_dense_pixels"]),
            tissue_pixels=int(text["medseg_tissue_pixels"]),
            cue=text["medseg_cue"] == "1",
            params=text.get("medseg_params", ""),
        )
    except (OSError, KeyError, ValueError) as err:
        raise InputError(path, f"not a synthetic mammography mask ({err})") from err
    counted = int((mask == 255).sum())
    if counted != truth.dense_pixels:
        raise InputError(path, f"mask has {counted} dense pixels but records {truth.dense_pixels}")
    return truth


# --------------------------------------------------------------------------------------------------
# Orchestration


@dataclass(frozen=True)
class _PatientJob:
    out_dir: str
    seed: int
    hospital: int
    patient: int
    n_images: int
    spurious_cue: float
    height: int

    @property
    def params(self) -> str:
        """The settings an image depends on (not n_per_hospital or hospitals: growing a run reuses it)."""
        return f"seed={self.seed};height={self.height};spurious_cue={self.spurious_cue!r}"


def _patient_density_class(seed: int, hospital: int, patient: int, mix: tuple[float, ...]) -> int:
    """Class index from a golden-ratio sequence over the hospital's mix: balanced even for few patients."""
    offset = np.random.default_rng(np.random.SeedSequence([seed, hospital])).random()
    quantile = (offset + patient * _GOLDEN) % 1.0
    return int(min(len(mix) - 1, np.searchsorted(np.cumsum(mix) / sum(mix), quantile, side="right")))


def _cue_probability(hospital: int, label: str, strength: float) -> float:
    dense = label in ("C", "D")
    favoured = dense if hospital % 2 == 0 else not dense
    return 0.5 + strength / 2.0 if favoured else 0.5 - strength / 2.0


def _image_id(hospital: int, patient: int, laterality: str, view: str) -> str:
    return f"{hospital_name(hospital)}_P{patient:04d}_{laterality}_{view}"


def _record(job: _PatientJob, laterality: str, view: str, label: str) -> Record:
    image_id = _image_id(job.hospital, job.patient, laterality, view)
    return Record(
        id=image_id, path=f"images/{image_id}.dcm", label=label, domain=hospital_name(job.hospital),
        patient_id=f"{hospital_name(job.hospital)}_P{job.patient:04d}", mask_path=f"masks/{image_id}.png",
        laterality=laterality, view=view,
    )  # fmt: skip


def _existing_truth(out_dir: Path, image_id: str, params: str) -> MaskTruth | None:
    """The truth of an image already written completely (DICOM and mask) with ``params``, else None."""
    if not (out_dir / "images" / f"{image_id}.dcm").is_file():
        return None
    try:
        truth = read_mask_truth(out_dir / "masks" / f"{image_id}.png")
    except InputError:
        return None
    return truth if truth.params == params else None


def _generate_patient(job: _PatientJob) -> list[tuple[Record, MaskTruth]]:
    """Draw (or find) the images of one patient; every random draw derives from (seed, hospital, patient).

    Each image has its own child seeds for anatomy, cue decision and rendering, so skipping an image
    that exists, or switching the cue on, leaves every other draw unchanged.
    """
    out_dir = Path(job.out_dir)
    profile = hospital_profile(job.hospital)
    patient_seq = np.random.SeedSequence([job.seed, job.hospital, job.patient])
    image_seqs = patient_seq.spawn(len(VIEWS))
    rng = np.random.default_rng(patient_seq)
    klass = _patient_density_class(job.seed, job.hospital, job.patient, profile.density_mix)
    base_fraction = rng.uniform(*_CLASS_FRACTIONS[klass])
    side_fraction = {side: base_fraction + rng.normal(0.0, 0.025) for side in ("R", "L")}
    size = rng.uniform(0.9, 1.08)

    results = []
    for index, (laterality, view) in enumerate(VIEWS[: job.n_images]):
        image_id = _image_id(job.hospital, job.patient, laterality, view)
        truth = _existing_truth(out_dir, image_id, job.params)
        if truth is None:
            anatomy_seq, cue_seq, render_seq = image_seqs[index].spawn(3)
            image_rng = np.random.default_rng(anatomy_seq)
            target = float(np.clip(side_fraction[laterality] + image_rng.normal(0.0, 0.015), 0.03, 0.95))
            anatomy = draw_anatomy(image_rng, image_shape(profile, job.height), view, target, size)
            label = density_label(anatomy.dense_fraction)
            cue = job.spurious_cue > 0 and (
                np.random.default_rng(cue_seq).random()
                < _cue_probability(job.hospital, label, job.spurious_cue)
            )
            image = _finish(anatomy, profile, np.random.default_rng(render_seq), laterality, view, cue)
            truth = MaskTruth(int(image.dense.sum()), int(image.tissue.sum()), bool(cue), job.params)
            _write_image(out_dir, job, profile, image, truth, VIEWS[index])
        results.append((_record(job, laterality, view, truth.label), truth))
    return results


def _write_image(
    out_dir: Path,
    job: _PatientJob,
    profile: VendorProfile,
    image: Mammogram,
    truth: MaskTruth,
    laterality_view: tuple[str, str],
) -> None:
    """DICOM first, mask last: the mask's presence marks the image complete for a resumed run."""
    laterality, view = laterality_view
    image_id = _image_id(job.hospital, job.patient, laterality, view)
    patient_id = f"{hospital_name(job.hospital)}_P{job.patient:04d}"
    info = MammoDicomInfo(
        patient_id=patient_id,
        patient_name=f"SYNTH^{patient_id}",
        study_key=f"{job.seed}/{patient_id}",
        image_key=f"{job.seed}/{image_id}",
        laterality=laterality,
        view=view,
        manufacturer=profile.manufacturer,
        model=profile.model,
        institution=f"Synthetic Hospital {hospital_name(job.hospital)}",
        pixel_spacing_mm=round(profile.detector_height_mm / image.pixels.shape[0], 4),
        bits_stored=profile.bits_stored,
        monochrome1=profile.monochrome1,
        window=image.window,
        rescale=profile.rescale,
        rle=profile.rle,
        instance_number=VIEWS.index(laterality_view) + 1,
    )
    write_mammo_dicom(out_dir / "images" / f"{image_id}.dcm", image.pixels, info)
    write_mask(out_dir / "masks" / f"{image_id}.png", image.dense, truth)


def _jobs(
    out_dir: Path, n_per_hospital: int, hospitals: int, seed: int, spurious_cue: float, height: int
) -> list[_PatientJob]:
    per_patient = len(VIEWS)
    jobs = []
    for hospital in range(hospitals):
        for patient in range(math.ceil(n_per_hospital / per_patient)):
            n_images = min(per_patient, n_per_hospital - patient * per_patient)
            jobs.append(_PatientJob(str(out_dir), seed, hospital, patient, n_images, spurious_cue, height))
    return jobs


def _check_arguments(
    n_per_hospital: int, hospitals: int, spurious_cue: float, height: int, workers: int
) -> None:
    problems = []
    if n_per_hospital < 1:
        problems.append(f"n_per_hospital must be >= 1, got {n_per_hospital}")
    if hospitals < 1:
        problems.append(f"hospitals must be >= 1, got {hospitals}")
    if not 0.0 <= spurious_cue <= 1.0:
        problems.append(f"spurious_cue must be in [0, 1], got {spurious_cue}")
    if height < 64:
        problems.append(f"height must be >= 64 pixels, got {height}")
    if workers < 1:
        problems.append(f"workers must be >= 1, got {workers}")
    if problems:
        raise ConfigError("synthetic mammography: " + "; ".join(problems))


def generate_mammo(
    out_dir: Path,
    n_per_hospital: int,
    hospitals: int = 4,
    seed: int = 0,
    spurious_cue: float = 0.0,
    height: int = 512,
    progress: Callable[[int], None] | None = None,
    workers: int = 1,
) -> list[Record]:
    """Write the benchmark under ``out_dir`` and return one :class:`Record` per image.

    Hospitals are "H1".."H<hospitals>", each with :func:`hospital_profile`; every patient has up to
    four images (RCC, LCC, RMLO, LMLO), so a hospital has ceil(n_per_hospital / 4) patients. Record
    paths are relative to ``out_dir`` and ``split`` is left empty (splits are made elsewhere).
    Deterministic and resumable: the same arguments give byte-identical files, images already on
    disk are not redrawn, and ``workers`` > 1 (a process pool over patients) changes nothing but
    speed. ``progress(1)`` is called once per image. See the module docstring for the spurious cue.
    """
    _check_arguments(n_per_hospital, hospitals, spurious_cue, height, workers)
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "masks").mkdir(parents=True, exist_ok=True)
    jobs = _jobs(out_dir, n_per_hospital, hospitals, seed, float(spurious_cue), height)
    results: list[list[tuple[Record, MaskTruth]] | None] = [None] * len(jobs)

    def done(index: int, patient: list[tuple[Record, MaskTruth]]) -> None:
        results[index] = patient
        for _ in patient:
            if progress is not None:
                progress(1)

    if workers == 1:
        for index, job in enumerate(jobs):
            done(index, _generate_patient(job))
    else:
        # spawn, not fork: the caller may hold threads (torch, BLAS) that a forked child would inherit
        # in an undefined state. As with any spawn pool, a calling script needs a __main__ guard.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=context) as pool:
            futures = {pool.submit(_generate_patient, job): index for index, job in enumerate(jobs)}
            for future in as_completed(futures):
                done(futures[future], future.result())
    return [record for patient in results for record, _ in patient or []]


def mammo_truths(out_dir: Path, records: list[Record]) -> dict[str, MaskTruth]:
    """The recorded truth (dense fraction, cue flag) of each generated record, by image id."""
    return {r.id: read_mask_truth(Path(out_dir) / r.mask_path) for r in records}
