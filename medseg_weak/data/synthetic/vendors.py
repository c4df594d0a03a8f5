"""Hospital "vendor" profiles of the mammography benchmark: file format, intensity curve, population.

One responsibility: what makes one hospital's mammograms differ from another's before any anatomy is
drawn (the vendor's processing and the hospital's population), and the display-to-stored intensity
curve and fixed window that follow from it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

#: Lengths in a profile (``blur``) are given in pixels of an image this many rows high.
REF_HEIGHT = 512.0


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


def vendor_curve(signal: np.ndarray, profile: VendorProfile) -> np.ndarray:
    s = np.clip(signal, 0.0, 1.0)
    if profile.curve == "log":
        return np.log1p(profile.curve_param * s) / math.log1p(profile.curve_param)
    if profile.curve == "gamma":
        return s**profile.curve_param
    raise ValueError(f"unknown intensity curve '{profile.curve}' (valid: log, gamma)")


def vendor_window(profile: VendorProfile) -> tuple[float, float] | None:
    """The vendor's fixed (center, width) in modality units, or None if it writes no window.

    Fixed per vendor, not fitted to each image: a window stretched to every breast's own range
    would make an all-fat and an all-dense breast look alike, erasing the density signal.
    """
    if not profile.window:
        return None
    top = 2**profile.bits_stored - 1
    low, high = (float(v) * top for v in vendor_curve(np.array([0.05, 0.85]), profile))
    if profile.monochrome1:
        low, high = top - high, top - low
    slope, intercept = profile.rescale or (1.0, 0.0)
    low, high = slope * low + intercept, slope * high + intercept
    return float(round((low + high) / 2.0)), float(round(high - low))


def image_shape(profile: VendorProfile, height: int) -> tuple[int, int]:
    """Rows and columns of this vendor's images for a nominal ``height`` (even numbers)."""
    rows = max(32, 2 * round(height * profile.height_scale / 2))
    return rows, max(24, 2 * round(rows * profile.aspect / 2))
