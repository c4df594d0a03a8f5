"""The PNG / JPEG / TIFF (and other Pillow formats) back-end of :func:`medseg_weak.data.io.read_image`.

Pillow for most formats, tifffile for TIFF (every dtype exactly), OpenCV for 16-bit colour PNG (which
Pillow reduces to 8 bits). The scaling policy is documented in :mod:`medseg_weak.data.io`.
"""

from __future__ import annotations

import logging
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image as PILImage
from PIL import ImageOps, UnidentifiedImageError

from medseg_weak.data.image import Image
from medseg_weak.data.pixel_scaling import check_layout, select_frame, unit_range
from medseg_weak.errors import InputError

_log = logging.getLogger(__name__)

PIL_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # includes "image file is truncated"
    SyntaxError,  # Pillow's PNG plugin reports broken chunks as SyntaxError
    ValueError,
    EOFError,
    struct.error,
    zlib.error,
    MemoryError,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF


def read_pillow(path: Path, frame: int | None, head: bytes) -> Image:
    if _is_16bit_colour_png(head):
        values = _read_png16_colour(path)
        if values is not None:
            select_frame(path, frame, 1)
            return _raster_image(path, values, "png", frame)
    try:
        with PILImage.open(path) as img:
            fmt = (img.format or path.suffix.lstrip(".") or "image").lower()
            index = select_frame(path, frame, int(getattr(img, "n_frames", 1)))
            if index:
                img.seek(index)
            values = _pil_to_array(path, img)
    except UnidentifiedImageError as err:
        raise InputError(path, "is not a DICOM file or an image format Pillow can read") from err
    except PILImage.DecompressionBombError as err:
        raise InputError(path, f"is too large to decode safely ({err})") from err
    except PIL_ERRORS as err:
        raise InputError(path, f"is a truncated or corrupt image file ({type(err).__name__}: {err})") from err
    return _raster_image(path, values, fmt, frame)


def _pil_to_array(path: Path, img: PILImage.Image) -> np.ndarray:
    """Pixels of a Pillow image as grey HxW or RGB HxWx3, keeping 16-bit and float precision."""
    if img.getexif().get(0x0112, 1) != 1:  # EXIF orientation: phone/camera JPEGs are often rotated
        img = ImageOps.exif_transpose(img)
    mode = img.mode
    if mode.startswith("I;16") or mode in ("I", "F", "L", "RGB"):
        return np.asarray(img)
    if mode in ("1", "LA", "La"):
        return np.asarray(img.convert("L"))
    if mode in ("P", "PA", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
        return np.asarray(img.convert("RGB"))  # alpha is dropped: it is not image content
    raise InputError(path, f"has unsupported Pillow image mode {mode!r}")


def _is_16bit_colour_png(head: bytes) -> bool:
    # IHDR starts at byte 16: width(4) height(4) bit depth(1) colour type(1); types 2 / 6 = RGB(A).
    return head.startswith(PNG_MAGIC) and len(head) >= 26 and head[24] == 16 and head[25] in (2, 6)


def _read_png16_colour(path: Path) -> np.ndarray | None:
    """Decode a 16-bit RGB(A) PNG at full depth, which Pillow silently reduces to 8 bits.

    OpenCV (installed with grad-cam) decodes it exactly; without it, fall back to Pillow's 8 bits.
    """
    try:
        import cv2
    except ImportError:
        _log.warning("%s: 16-bit colour PNG read at 8 bits (install opencv for full depth)", path)
        return None
    bgr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if bgr is None or bgr.ndim != 3 or bgr.dtype != np.uint16:
        raise InputError(path, "is a truncated or corrupt 16-bit colour PNG")
    return bgr[..., 2::-1]  # BGR(A) -> RGB; the float32 conversion makes it contiguous


def read_tiff(path: Path, frame: int | None) -> Image:
    """TIFF through tifffile, which keeps every dtype (16-bit colour, float64) exactly.

    tifffile needs the optional imagecodecs package for LZW / PackBits / JPEG compression, and
    leaves palette TIFFs as indices; those files go through Pillow instead, which decodes them but
    reduces 16-bit colour to 8 bits.
    """
    import tifffile  # a dependency of scikit-image; imported here as only TIFF needs it

    try:
        with tifffile.TiffFile(path) as tif:
            # Reduced-resolution pages are thumbnails of the main image, not frames.
            pages = [p for p in tif.pages if not getattr(p, "is_reduced", False)]
            if not pages:
                raise InputError(path, "is a TIFF file without any image")
            page = pages[select_frame(path, frame, len(pages))]
            if page.photometric == tifffile.PHOTOMETRIC.PALETTE:
                return read_pillow(path, frame, b"")
            values, axes = page.asarray(), page.axes
            white_is_zero = page.photometric == tifffile.PHOTOMETRIC.MINISWHITE
    except (KeyError, ValueError) as err:
        if "imagecodecs" in str(err):
            return read_pillow(path, frame, b"")
        raise InputError(path, f"is a truncated or corrupt TIFF file ({type(err).__name__}: {err})") from err
    except (OSError, EOFError, IndexError, struct.error, zlib.error, MemoryError) as err:
        raise InputError(path, f"is a truncated or corrupt TIFF file ({type(err).__name__}: {err})") from err
    if "S" in axes:  # samples axis: planar (SYX) or interleaved (YXS); extra samples are alpha
        values = np.moveaxis(values, axes.index("S"), -1)
        values = values[..., :3] if values.shape[-1] >= 3 else values[..., 0]
    image = _raster_image(path, values, "tiff", frame)
    if white_is_zero:  # the TIFF counterpart of MONOCHROME1
        np.subtract(np.float32(1.0), image.pixels, out=image.pixels)
    return image


def _raster_image(path: Path, values: np.ndarray, fmt: str, frame: int | None) -> Image:
    check_layout(path, values)
    pixels = unit_range(path, values)
    meta: dict[str, Any] = {"source": fmt, "path": str(path)}
    if np.issubdtype(values.dtype, np.integer):
        meta["bits_stored"] = values.dtype.itemsize * 8
    if frame is not None:
        meta["frame"] = frame
    return Image(pixels=pixels, meta=meta)
