"""Read one image file (DICOM, PNG, TIFF, JPEG, ...) into an :class:`Image` scaled to [0, 1].

This module is the facade of the readers: it sniffs the format and hands the file to a back-end,
:mod:`~medseg_weak.data.dicom` or :mod:`~medseg_weak.data.raster`, the only places that know about
file formats and DICOM display semantics. Every failure a user's file can cause comes out as
:class:`~medseg_weak.errors.InputError` naming the file and a human reason; a bare pydicom / Pillow /
numpy exception escaping from here is a bug.

Intensity policy (the part downstream code relies on):

* DICOM monochrome: stored values -> Modality LUT (Rescale Slope/Intercept or Modality LUT
  Sequence) -> VOI (VOI LUT Sequence, else the first Window Center/Width) -> [0, 1] -> inverted for
  MONOCHROME1, so bright always means dense.

  - With a window, [0, 1] is the window's output range (values outside the window saturate).
  - With a VOI LUT, [0, 1] spans the smallest to largest entry of the LUT itself, not the range its
    descriptor claims: vendors often declare 16-bit entries and fill only 12 bits.
  - With no VOI, [0, 1] spans the image's own minimum to maximum. The Bits Stored range is not
    used because it is often far wider than the data (12-bit detectors stored as 16 bits; a
    mammogram rarely uses the whole range), which would leave images dark and inconsistent
    across vendors. This is deterministic, and a positive rescale slope cannot change the result.

* DICOM colour (RGB, YBR_* converted to RGB by pydicom, PALETTE COLOR expanded through its LUT):
  divided by the largest value the stored bit depth (or LUT entry type) allows, so colours keep
  their meaning across images.
* Other formats: unsigned integers are divided by their dtype's maximum (255, 65535); signed
  integers and floats outside [0, 1] are min-max scaled; floats already in [0, 1] are kept.

An image whose values are all the same, or that holds NaN / inf, is rejected: it carries no
information and would divide by zero downstream.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from PIL import UnidentifiedImageError

from medseg_weak.data.dicom import read_dicom
from medseg_weak.data.image import Image
from medseg_weak.data.raster import PIL_ERRORS, PNG_MAGIC, TIFF_MAGICS, read_pillow, read_tiff
from medseg_weak.errors import InputError

__all__ = ["Image", "read_image", "read_mask"]

# Suffixes under which a file without the 'DICM' marker is still worth a forced DICOM read: old
# archives write headerless DICOM, often named by UID ("1.2.840.113619...", whose "suffix" is
# digits) or with no suffix at all. Anything else without the marker is not treated as DICOM.
_DICOM_SUFFIXES = {".dcm", ".dicom", ".dic", ""}


def read_image(path: str | Path, *, frame: int | None = None) -> Image:
    """Read a DICOM or ordinary image file into an :class:`Image` with float32 pixels in [0, 1].

    ``frame`` selects one frame (0-based) of a multi-frame file; a multi-frame file read without it
    is an error rather than a silent choice, because frames of one file are often different views.
    See the module docstring for how intensities are scaled. Raises :class:`InputError` for
    anything that cannot be read.
    """
    path = Path(path)
    head = _read_head(path)
    if head[128:132] == b"DICM":
        return read_dicom(path, frame, has_marker=True)
    if head.startswith(TIFF_MAGICS):
        return read_tiff(path, frame)
    if head.startswith(PNG_MAGIC) or head.startswith(b"\xff\xd8\xff"):
        return read_pillow(path, frame, head)
    suffix = path.suffix.lower()
    if suffix in _DICOM_SUFFIXES or suffix[1:].isdigit():
        return read_dicom(path, frame, has_marker=False)
    return read_pillow(path, frame, head)


def read_mask(path: str | Path) -> np.ndarray:
    """Read a label mask (PNG/TIFF) as its raw integer values, HxW, without any scaling.

    Unlike :func:`read_image`, an all-zero mask is valid (a fatty breast, a flawless fundus photo),
    and values keep their meaning (0/255 foreground, or bit flags), so nothing is normalised.
    """
    path = Path(path)
    _read_head(path)  # missing / empty / unreadable files get read_image's messages
    try:
        with PILImage.open(path) as img:
            values = np.asarray(img.convert("L") if img.mode in ("1", "P") else img)
    except UnidentifiedImageError as err:
        raise InputError(path, "is not a mask image (expected a single-channel PNG or TIFF)") from err
    except PIL_ERRORS as err:
        raise InputError(path, f"is a truncated or corrupt mask image ({type(err).__name__}: {err})") from err
    if values.ndim != 2:
        raise InputError(path, f"mask must be single-channel, got shape {values.shape}")
    if values.size == 0:
        raise InputError(path, "mask has zero size")
    if not np.issubdtype(values.dtype, np.integer):
        raise InputError(path, f"mask must hold integer labels, got {values.dtype}")
    return values


# --------------------------------------------------------------------------------------------------
# shared helpers


def _read_head(path: Path) -> bytes:
    """Return the first bytes of ``path`` (enough to sniff the format), or raise for unusable paths."""
    try:
        with path.open("rb") as f:
            head = f.read(132)
    except FileNotFoundError as err:
        raise InputError(path, "file not found") from err
    except IsADirectoryError as err:
        raise InputError(path, "is a directory, not an image file") from err
    except PermissionError as err:
        raise InputError(path, "permission denied") from err
    except OSError as err:
        raise InputError(path, f"cannot be opened ({err.strerror or err})") from err
    if not head:
        raise InputError(path, "file is empty (0 bytes)")
    return head
