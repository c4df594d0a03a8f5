"""Vendor rendering of a drawn breast: cue, blur, intensity curve, noise, burned-in labels, stored bits.

One responsibility: turn an :class:`~medseg_weak.data.synthetic.anatomy.Anatomy` into the stored
pixels of one hospital's DICOM (and the masks in the same final orientation).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont
from scipy import ndimage

from medseg_weak.data.synthetic.anatomy import Anatomy, draw_anatomy
from medseg_weak.data.synthetic.cue import CueMarker, draw_cue, profile_marker
from medseg_weak.data.synthetic.vendors import (
    REF_HEIGHT,
    VendorProfile,
    image_shape,
    vendor_curve,
    vendor_window,
)


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
    anatomy: Anatomy,
    profile: VendorProfile,
    rng: np.random.Generator,
    laterality: str,
    view: str,
    cue: bool,
    marker: CueMarker | None = None,
) -> np.ndarray:
    """Stored uint16 pixels, as they go into the DICOM; ``marker`` None is the profile's own marker.

    Order follows the physics loosely: anatomy (+ marker) -> detector blur -> vendor curve -> noise
    -> mirror for right breasts -> burned-in labels -> quantisation -> MONOCHROME1 inversion.
    """
    h = anatomy.base.shape[0]
    # separate streams, so an image with the cue differs from one without only at the marker
    cue_rng, noise_rng = rng.spawn(2)
    signal = anatomy.base + profile.contrast * anatomy.gland
    if cue:
        draw_cue(signal, anatomy, marker or profile_marker(profile), cue_rng)
    signal = ndimage.gaussian_filter(signal, sigma=profile.blur * h / REF_HEIGHT)
    values = vendor_curve(signal, profile)
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
    marker: CueMarker | None = None,
) -> Mammogram:
    """Draw one mammogram in final orientation (a pure function of its arguments and ``rng``)."""
    anatomy_rng, render_rng = rng.spawn(2)
    anatomy = draw_anatomy(anatomy_rng, image_shape(profile, height), view, target_fraction, size)
    return render_mammogram(anatomy, profile, render_rng, laterality, view, cue, marker)


def render_mammogram(
    anatomy: Anatomy,
    profile: VendorProfile,
    rng: np.random.Generator,
    laterality: str,
    view: str,
    cue: bool,
    marker: CueMarker | None = None,
) -> Mammogram:
    """:func:`render` plus the masks in the same (final) orientation and the vendor's window."""
    pixels = render(anatomy, profile, rng, laterality, view, cue, marker)
    flip = (slice(None), slice(None, None, -1)) if laterality == "R" else (slice(None), slice(None))
    return Mammogram(
        pixels=pixels, dense=anatomy.dense[flip], tissue=anatomy.tissue[flip], window=vendor_window(profile)
    )
