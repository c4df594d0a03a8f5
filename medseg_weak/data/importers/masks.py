"""Masks shipped as JPEG become binary PNGs: JPEG's ringing leaves grey values around every edge.

A mask JPEG saved from a 0/255 drawing comes back with values such as 3, 17, 241 near the outline;
read as it is, every non-zero value would count as dense tissue. Thresholding at half the range
recovers the drawing; the PNG keeps the project's 0/255 foreground convention (what the synthetic
benchmark writes and :func:`medseg_weak.data.dataset.preprocess_record` reads as ``> 0``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from medseg_weak.data.io import read_mask
from medseg_weak.errors import InputError
from medseg_weak.io_utils import atomic_write

#: Values at or above this (of 255) are foreground.
THRESHOLD = 128


def binarise(values: np.ndarray) -> np.ndarray:
    """0/255 uint8 from a greyscale mask with compression noise."""
    return np.where(values >= THRESHOLD, 255, 0).astype(np.uint8)


def write_binary_png(jpeg: Path, png: Path, shape: tuple[int, int] | None = None) -> Path:
    """Threshold one JPEG mask into ``png``; ``shape`` (rows, cols) is its image's size, checked here."""
    values = _read_grey(jpeg)
    if shape is not None and values.shape != tuple(shape):
        raise InputError(jpeg, f"mask is {values.shape}, its image is {tuple(shape)}")
    image = PILImage.fromarray(binarise(values), mode="L")
    return atomic_write(png, lambda tmp: image.save(tmp, format="PNG"))


def _read_grey(path: Path) -> np.ndarray:
    """JPEG masks are often saved as RGB; read_mask accepts only one channel, so convert first."""
    try:
        with PILImage.open(path) as img:
            if img.mode not in ("L", "1", "P", "I;16", "I"):
                return np.asarray(img.convert("L"))
    except OSError as err:
        raise InputError(path, f"cannot read mask image ({err})") from err
    return read_mask(path)
