"""Pixel arrays to float32 [0, 1], and the checks every image back-end shares (frames, layout, values).

The intensity policy these serve is in :mod:`medseg_weak.data.io`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medseg_weak.errors import InputError


def select_frame(path: Path, frame: int | None, n_frames: int) -> int:
    """Validate the requested frame against the file's frame count and return the index to read."""
    if frame is None:
        if n_frames > 1:
            raise InputError(
                path, f"has {n_frames} frames but one image was expected; pass frame=k to select one"
            )
        return 0
    if not 0 <= frame < n_frames:
        raise InputError(path, f"frame={frame} is out of range: the file has {n_frames} frame(s)")
    return frame


def finite_range(path: Path, values: np.ndarray) -> tuple[float, float]:
    """Return (min, max) of ``values``, rejecting empty, NaN/inf and constant images."""
    if values.size == 0:
        raise InputError(path, f"zero-size image (shape {values.shape})")
    # min/max propagate NaN and expose inf, so finiteness costs no extra pass in the common case.
    lo, hi = values.min(), values.max()
    if not (np.isfinite(lo) and np.isfinite(hi)):
        bad = int(np.count_nonzero(~np.isfinite(values)))
        raise InputError(path, f"contains {bad} NaN/inf pixel value(s)")
    if lo == hi:
        raise InputError(path, f"all pixels have the same value ({lo}); the image is blank")
    return float(lo), float(hi)


def to_float32(values: np.ndarray) -> np.ndarray:
    """A C-contiguous float32 array we own and may modify in place; copies only when needed."""
    if values.dtype == np.float32 and values.flags.writeable and values.flags.c_contiguous:
        return values
    return np.array(values, dtype=np.float32, order="C", copy=True)


def scale_in_place(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map [lo, hi] to [0, 1] in place on a float32 array.

    Dividing by the float32 span (rather than multiplying by its reciprocal) keeps the exact data
    maximum at exactly 1.0 and the result inside [0, 1] without a separate clip pass.
    """
    lo32, hi32 = np.float32(lo), np.float32(hi)
    x -= lo32
    x /= hi32 - lo32
    return x


def unit_range(path: Path, values: np.ndarray) -> np.ndarray:
    """Scale a non-DICOM array to float32 [0, 1] by the policy in the module docstring."""
    lo, hi = finite_range(path, values)
    if values.dtype == np.bool_:
        return values.astype(np.float32)
    if np.issubdtype(values.dtype, np.unsignedinteger):
        return scale_in_place(to_float32(values), 0.0, float(np.iinfo(values.dtype).max))
    x = to_float32(values)
    if np.issubdtype(values.dtype, np.floating) and lo >= 0.0 and hi <= 1.0:
        return x
    return scale_in_place(x, lo, hi)


def check_layout(path: Path, values: np.ndarray) -> None:
    if values.ndim == 3 and values.shape[-1] == 3:
        return
    if values.ndim != 2:
        raise InputError(path, f"unsupported pixel layout {values.shape}; expected HxW or HxWx3")
