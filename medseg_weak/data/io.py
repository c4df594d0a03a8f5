"""Read one image file (DICOM, PNG, TIFF, JPEG, ...) into an :class:`Image` scaled to [0, 1].

This module is the only place that knows about file formats and DICOM display semantics. Every
failure a user's file can cause comes out as :class:`~medseg_weak.errors.InputError` naming the file
and a human reason; a bare pydicom / Pillow / numpy exception escaping from here is a bug.

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

import logging
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from PIL import Image as PILImage
from PIL import ImageOps, UnidentifiedImageError
from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi, get_decoder, pixel_array
from pydicom.pixels.utils import get_expected_length, get_nr_frames
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from medseg_weak.data.image import Image
from medseg_weak.errors import InputError

__all__ = ["read_image", "read_mask"]

_log = logging.getLogger(__name__)

# Suffixes under which a file without the 'DICM' marker is still worth a forced DICOM read: old
# archives write headerless DICOM, often named by UID ("1.2.840.113619...", whose "suffix" is
# digits) or with no suffix at all. Anything else without the marker is not treated as DICOM.
_DICOM_SUFFIXES = {".dcm", ".dicom", ".dic", ""}

# pydicom raises almost anything on corrupt input (struct errors from short reads, ValueError from
# bad lengths, KeyError/IndexError from broken sequences, ...). These wrap pydicom calls only, so
# catching them cannot hide a bug elsewhere in this module.
_DICOM_ERRORS: tuple[type[BaseException], ...] = (
    InvalidDicomError,
    BytesLengthException,
    EOFError,
    OSError,
    ValueError,
    KeyError,
    IndexError,
    TypeError,
    AttributeError,
    NotImplementedError,
    RuntimeError,
    OverflowError,
    MemoryError,
    struct.error,
)
_PIL_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # includes "image file is truncated"
    SyntaxError,  # Pillow's PNG plugin reports broken chunks as SyntaxError
    ValueError,
    EOFError,
    struct.error,
    zlib.error,
    MemoryError,
)

# Which pip packages bring a decoder for a compressed transfer syntax (pydicom's pylibjpeg plugin).
_DECODER_HINTS = {
    "1.2.840.10008.1.2.4.50": "pylibjpeg pylibjpeg-libjpeg",  # JPEG Baseline
    "1.2.840.10008.1.2.4.51": "pylibjpeg pylibjpeg-libjpeg",  # JPEG Extended
    "1.2.840.10008.1.2.4.57": "pylibjpeg pylibjpeg-libjpeg",  # JPEG Lossless
    "1.2.840.10008.1.2.4.70": "pylibjpeg pylibjpeg-libjpeg",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80": "pylibjpeg pylibjpeg-libjpeg",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81": "pylibjpeg pylibjpeg-libjpeg",  # JPEG-LS Near-lossless
    "1.2.840.10008.1.2.4.90": "pylibjpeg pylibjpeg-openjpeg",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91": "pylibjpeg pylibjpeg-openjpeg",  # JPEG 2000
    "1.2.840.10008.1.2.4.201": "pylibjpeg pylibjpeg-openjpeg",  # HTJ2K Lossless
    "1.2.840.10008.1.2.4.202": "pylibjpeg pylibjpeg-openjpeg",  # HTJ2K Lossless RPCL
    "1.2.840.10008.1.2.4.203": "pylibjpeg pylibjpeg-openjpeg",  # HTJ2K
}

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_PIXEL_DATA_TAG_LE = b"\xe0\x7f\x10\x00"  # (7FE0,0010) as written in little-endian files
_PIXEL_DATA_TAG_BE = b"\x7f\xe0\x00\x10"

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF


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
        return _read_dicom(path, frame, has_marker=True)
    if head.startswith(_TIFF_MAGICS):
        return _read_tiff(path, frame)
    if head.startswith(_PNG_MAGIC) or head.startswith(b"\xff\xd8\xff"):
        return _read_pillow(path, frame, head)
    suffix = path.suffix.lower()
    if suffix in _DICOM_SUFFIXES or suffix[1:].isdigit():
        return _read_dicom(path, frame, has_marker=False)
    return _read_pillow(path, frame, head)


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
    except _PIL_ERRORS as err:
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


def _select_frame(path: Path, frame: int | None, n_frames: int) -> int:
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


def _finite_range(path: Path, values: np.ndarray) -> tuple[float, float]:
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


def _to_float32(values: np.ndarray) -> np.ndarray:
    """A C-contiguous float32 array we own and may modify in place; copies only when needed."""
    if values.dtype == np.float32 and values.flags.writeable and values.flags.c_contiguous:
        return values
    return np.array(values, dtype=np.float32, order="C", copy=True)


def _scale_in_place(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map [lo, hi] to [0, 1] in place on a float32 array.

    Dividing by the float32 span (rather than multiplying by its reciprocal) keeps the exact data
    maximum at exactly 1.0 and the result inside [0, 1] without a separate clip pass.
    """
    lo32, hi32 = np.float32(lo), np.float32(hi)
    x -= lo32
    x /= hi32 - lo32
    return x


def _unit_range(path: Path, values: np.ndarray) -> np.ndarray:
    """Scale a non-DICOM array to float32 [0, 1] by the policy in the module docstring."""
    lo, hi = _finite_range(path, values)
    if values.dtype == np.bool_:
        return values.astype(np.float32)
    if np.issubdtype(values.dtype, np.unsignedinteger):
        return _scale_in_place(_to_float32(values), 0.0, float(np.iinfo(values.dtype).max))
    x = _to_float32(values)
    if np.issubdtype(values.dtype, np.floating) and lo >= 0.0 and hi <= 1.0:
        return x
    return _scale_in_place(x, lo, hi)


def _check_layout(path: Path, values: np.ndarray) -> None:
    if values.ndim == 3 and values.shape[-1] == 3:
        return
    if values.ndim != 2:
        raise InputError(path, f"unsupported pixel layout {values.shape}; expected HxW or HxWx3")


# --------------------------------------------------------------------------------------------------
# DICOM


def _read_dicom(path: Path, frame: int | None, *, has_marker: bool) -> Image:
    try:
        ds = pydicom.dcmread(path, force=not has_marker)
    except _DICOM_ERRORS as err:
        reason = "is not a readable DICOM file" if not has_marker else "is a corrupt DICOM file"
        raise InputError(path, f"{reason} ({type(err).__name__}: {err})") from err
    try:
        return _dicom_image(path, ds, frame, has_marker=has_marker)
    except _DICOM_ERRORS as err:
        # pydicom parses element values lazily, on first access, so a damaged element can raise
        # from any ds.X below; the specific steps wrap their own errors with better messages.
        raise InputError(
            path, f"is a corrupt DICOM file: an element could not be parsed ({type(err).__name__}: {err})"
        ) from err


def _dicom_image(path: Path, ds: Dataset, frame: int | None, *, has_marker: bool) -> Image:
    """Decode the pixels of an already-read dataset and map them to [0, 1] (see module docstring)."""
    if not any(k in ds for k in _PIXEL_KEYWORDS):
        raise InputError(path, _why_no_pixels(path, ds, has_marker))

    tsuid = _transfer_syntax(path, ds)
    _check_decoder(path, tsuid)
    n_frames = _dicom_int(path, ds, "NumberOfFrames", default=1, reader=lambda: get_nr_frames(ds, warn=False))
    index = _select_frame(path, frame, n_frames)
    rows = _dicom_int(path, ds, "Rows", default=-1)
    cols = _dicom_int(path, ds, "Columns", default=-1)
    if rows < 0 or cols < 0:
        raise InputError(path, "has pixel data but no Rows / Columns elements to shape it")
    if rows == 0 or cols == 0:
        raise InputError(path, f"zero-size image (Rows={rows}, Columns={cols})")
    if not tsuid.is_encapsulated:
        _check_native_length(path, ds)

    try:
        # view_only: for uncompressed data, a read-only view of the file's bytes instead of a copy;
        # every step below makes its own float32 array anyway. raw=False converts YBR to RGB.
        # pydicom must mask unused high bits when Bits Stored < Bits Allocated, which needs a copy
        # (asking for a view then only logs a warning per image).
        view_only = ds.get("BitsStored") == ds.get("BitsAllocated")
        stored = pixel_array(ds, index=index if n_frames > 1 else None, raw=False, view_only=view_only)
    except _DICOM_ERRORS as err:
        raise InputError(path, _decode_failure(tsuid, err)) from err
    except BaseException as err:
        # pylibjpeg-rle is Rust (pyo3): corrupt input makes it panic, and pyo3's PanicException
        # derives from BaseException, so it slips past pydicom's "try the next plugin" handler.
        if type(err).__name__ != "PanicException":
            raise
        raise InputError(path, _decode_failure(tsuid, err)) from err

    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    meta = _dicom_meta(path, ds, tsuid)
    if frame is not None:
        meta["frame"] = index
    if n_frames > 1:
        meta["number_of_frames"] = n_frames

    if photometric == "PALETTE COLOR":
        pixels, meta["intensity"] = _palette_to_unit(path, ds, stored), "palette_lut"
    elif stored.ndim == 3:
        pixels, meta["intensity"] = _colour_to_unit(path, ds, stored), "bit_depth"
    elif photometric in ("MONOCHROME1", "MONOCHROME2"):
        pixels, meta["intensity"] = _monochrome_to_unit(path, ds, stored)
        if photometric == "MONOCHROME1":
            # MONOCHROME1 displays low values as white; flip so bright = dense everywhere. The
            # Presentation LUT Shape INVERSE that accompanies MONOCHROME1 describes this same
            # inversion, so it is not applied a second time.
            np.subtract(np.float32(1.0), pixels, out=pixels)
    else:
        raise InputError(path, f"unsupported Photometric Interpretation {photometric!r}")

    _check_layout(path, pixels)
    return Image(pixels=pixels, meta=meta)


def _decode_failure(tsuid: UID, err: BaseException) -> str:
    return (
        f"pixel data could not be decoded ({tsuid.name}); it is corrupt or uses a variant the installed"
        f" decoders do not support: {type(err).__name__}: {err}"
    )


def _why_no_pixels(path: Path, ds: Dataset, has_marker: bool) -> str:
    """Explain a dataset without pixel data: not DICOM at all, truncated, or a non-image object."""
    known_groups = {0x0008, 0x0010, 0x0020, 0x0028}
    # keys(), not iteration: iterating a Dataset converts every (possibly junk) raw element.
    groups = {tag.group for tag in ds.keys()}  # noqa: SIM118
    if not has_marker and not groups & known_groups:
        # A forced read of arbitrary bytes yields an empty or nonsense dataset.
        return "is not a DICOM file (no 'DICM' marker and no DICOM image elements)"
    try:
        data = path.read_bytes()
    except OSError as err:  # pragma: no cover - the file was readable a moment ago
        return f"contains no readable pixel data ({err})"
    if _PIXEL_DATA_TAG_LE in data or _PIXEL_DATA_TAG_BE in data:
        # pydicom drops an element it hits end-of-file in (with only a warning), so a truncated
        # compressed file looks like one without pixel data; the tag's bytes give it away.
        return "is truncated or corrupt: the pixel data element could not be read to its end"
    sop = ds.get("SOPClassUID")
    kind = f" (SOP class {UID(str(sop)).name})" if sop else ""
    return f"contains no pixel data{kind}; it is not an image or the file is truncated"


def _transfer_syntax(path: Path, ds: Dataset) -> UID:
    """The transfer syntax, inferred from the encoding pydicom detected when the file has no meta."""
    tsuid = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if tsuid:
        return UID(str(tsuid))
    implicit, little = ds.original_encoding
    if implicit is None or little is None:
        raise InputError(path, "has no Transfer Syntax UID and its encoding cannot be determined")
    if implicit:
        inferred = ImplicitVRLittleEndian
    else:
        inferred = ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    # pixel_array() needs the syntax in file_meta; headerless files are always uncompressed.
    ds.file_meta.TransferSyntaxUID = inferred
    return inferred


def _check_decoder(path: Path, tsuid: UID) -> None:
    try:
        decoder = get_decoder(tsuid)
    except NotImplementedError as err:
        raise InputError(
            path, f"uses transfer syntax {tsuid.name}, for which pydicom has no pixel data decoder"
        ) from err
    if decoder.is_available:
        return
    hint = _DECODER_HINTS.get(str(tsuid))
    if hint:
        how = f"pip install {hint}"
    else:
        how = "; ".join(decoder.missing_dependencies) or "see pydicom's pixel data handler docs"
    raise InputError(path, f"compressed with {tsuid.name} and no decoder installed ({how})")


def _dicom_int(
    path: Path, ds: Dataset, keyword: str, *, default: int, reader: Callable[[], Any] | None = None
) -> int:
    """Read an integer element, turning a malformed value into an InputError instead of a crash."""
    try:
        value = reader() if reader is not None else ds.get(keyword, default)
        return default if value is None or value == "" else int(value)
    except _DICOM_ERRORS as err:
        raise InputError(path, f"has an invalid {keyword} value ({err})") from err


def _check_native_length(path: Path, ds: Dataset) -> None:
    keyword = next(k for k in _PIXEL_KEYWORDS if k in ds)
    try:
        expected = get_expected_length(ds, "bytes")
        actual = len(ds[keyword].value)
    except _DICOM_ERRORS as err:
        raise InputError(path, f"has inconsistent image geometry elements ({err})") from err
    if actual < expected:
        # pydicom reads a short final element without complaint; a cut-off download ends up here.
        raise InputError(
            path, f"is truncated: pixel data holds {actual} of the {expected} bytes its header promises"
        )


def _monochrome_to_unit(path: Path, ds: Dataset, stored: np.ndarray) -> tuple[np.ndarray, str]:
    """Modality LUT -> VOI -> [0, 1] for a greyscale frame; returns pixels and the VOI step used."""
    modality = _apply_modality(path, ds, stored)
    lo, hi = _finite_range(path, modality)

    lut = _voi_lut_output(path, ds, modality)
    if lut is not None:
        return lut, "voi_lut"
    window = _window(ds)
    x = _to_float32(modality)
    if window is not None:
        return _apply_window_in_place(x, *window), "window"
    return _scale_in_place(x, lo, hi), "data_range"


def _apply_modality(path: Path, ds: Dataset, stored: np.ndarray) -> np.ndarray:
    """Stored values -> modality units (e.g. HU).

    A Modality LUT Sequence goes through pydicom's ``apply_modality_lut``. The common linear
    rescale is done here in float32: pydicom computes it in float64, which doubles the memory and
    time on a 4500x3000 mammogram and buys no precision that survives scaling to [0, 1].
    """
    try:
        if ds.get("ModalityLUTSequence"):
            return apply_modality_lut(stored, ds)
        slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    except _DICOM_ERRORS as err:
        raise InputError(path, f"has an unusable Modality LUT / rescale ({err})") from err
    if slope == 1.0 and intercept == 0.0:
        return stored
    x = _to_float32(stored)
    if slope != 1.0:
        x *= np.float32(slope)
    if intercept != 0.0:
        x += np.float32(intercept)
    return x


def _voi_lut_output(path: Path, ds: Dataset, modality: np.ndarray) -> np.ndarray | None:
    """Apply the first VOI LUT Sequence item and scale by the LUT's own output range, if present."""
    seq = ds.get("VOILUTSequence")
    if not seq or "LUTDescriptor" not in seq[0] or "LUTData" not in seq[0]:
        return None
    # LUT indices are integers; after a float rescale round rather than truncate.
    lut_in = modality if np.issubdtype(modality.dtype, np.integer) else np.rint(modality).astype(np.int32)
    try:
        n_entries, first_map = int(seq[0].LUTDescriptor[0]) or 2**16, int(seq[0].LUTDescriptor[1])
        # Running every possible input through pydicom's own LUT code yields the LUT's real output
        # range without re-implementing its parsing of US / OW LUT data.
        entries = apply_voi(np.arange(first_map, first_map + n_entries, dtype=np.int32), ds, 0)
        out = apply_voi(lut_in, ds, 0)
    except _DICOM_ERRORS as err:
        raise InputError(path, f"has an unusable VOI LUT Sequence ({err})") from err
    lo, hi = float(entries.min()), float(entries.max())
    if lo == hi:
        _log.warning("%s: VOI LUT is constant; ignoring it", path)
        return None
    return _scale_in_place(out.astype(np.float32), lo, hi)


def _window(ds: Dataset) -> tuple[float, float, str] | None:
    """The first (center, width, function) of the VOI LUT module, or None if absent or unusable."""
    if "WindowCenter" not in ds or "WindowWidth" not in ds:
        return None
    try:
        # DS with VM > 1 lists alternative windows; the first is the default view (as in pydicom).
        center = float(_first(ds.WindowCenter))
        width = float(_first(ds.WindowWidth))
        function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
    except _DICOM_ERRORS as err:
        _log.warning("window center/width unreadable (%s); scaling by the data range instead", err)
        return None
    valid = {"LINEAR": width >= 1, "LINEAR_EXACT": width > 0, "SIGMOID": width > 0}
    if not valid.get(function, False) or not (np.isfinite(center) and np.isfinite(width)):
        _log.warning(
            "window (center %s, width %s, %s) is invalid; scaling by the data range instead",
            center,
            width,
            function,
        )
        return None
    return center, width, function


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, (MultiValue, list, tuple)) else value


def _apply_window_in_place(x: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2 windowing straight to [0, 1], in place, in float32.

    pydicom's ``apply_windowing`` works in float64 with boolean masks and took 0.65 s on a
    4500x3000 image; the same formulas as in-place float32 ramps take a few tens of ms. Its output
    range (derived from Bits Stored and the rescale) is also replaced by [0, 1] directly.
    """
    if function == "SIGMOID":
        x -= np.float32(center)
        x *= np.float32(-4.0 / width)
        with np.errstate(over="ignore"):  # exp overflow -> inf -> 1/inf = 0, which is correct
            np.exp(x, out=x)
        x += np.float32(1.0)
        np.reciprocal(x, out=x)
        return x
    if function == "LINEAR_EXACT":
        lo, span = center - width / 2, width
    elif width == 1:
        # LINEAR with width 1 is a threshold at center - 0.5 (the ramp has zero length).
        np.greater(x, np.float32(center - 0.5), out=x, casting="unsafe")
        return x
    else:  # LINEAR: the standard's "c - 0.5" and "w - 1" quirks
        lo, span = (center - 0.5) - (width - 1) / 2, width - 1
    x -= np.float32(lo)
    x /= np.float32(span)
    np.clip(x, np.float32(0.0), np.float32(1.0), out=x)
    return x


def _colour_to_unit(path: Path, ds: Dataset, stored: np.ndarray) -> np.ndarray:
    _, hi = _finite_range(path, stored)
    if np.issubdtype(stored.dtype, np.floating):
        return _unit_range(path, stored)
    bits = _dicom_int(path, ds, "BitsStored", default=stored.dtype.itemsize * 8)
    # max() guards against a Bits Stored that understates the data, which would overflow 1.0.
    return _scale_in_place(_to_float32(stored), 0.0, max(float(2**bits - 1), hi))


def _palette_to_unit(path: Path, ds: Dataset, stored: np.ndarray) -> np.ndarray:
    try:
        rgb = _palette_lookup(ds, stored)
    except _DICOM_ERRORS as err:
        raise InputError(path, f"has an unusable Palette Color lookup table ({err})") from err
    _finite_range(path, rgb)
    # Entries are 8 or 16 bit; 8-bit palettes stored in 16-bit entries sit in the high byte.
    return _scale_in_place(_to_float32(rgb), 0.0, float(np.iinfo(rgb.dtype).max))


def _palette_lookup(ds: Dataset, stored: np.ndarray) -> np.ndarray:
    """Expand PALETTE COLOR indices to RGB.

    pydicom 3.0's ``apply_color_lut`` reads 16-bit OW LUT data as little-endian even in Explicit VR
    Big Endian files (pydicom-data's OBXXXX1A_expb.dcm comes out byte-swapped), so the common
    non-segmented 16-bit case is looked up here with the file's byte order; segmented and 8-bit
    LUTs still go through pydicom.
    """
    n_entries = int(ds.RedPaletteColorLookupTableDescriptor[0]) or 2**16
    first_map = int(ds.RedPaletteColorLookupTableDescriptor[1])
    channels = [ds.get(f"{c}PaletteColorLookupTableData") for c in ("Red", "Green", "Blue")]
    if any(not isinstance(ch, bytes) or len(ch) != 2 * n_entries for ch in channels):
        return apply_color_lut(stored, ds)[..., :3]  # drop an alpha LUT if present
    big_endian = ds.original_encoding[1] is False
    dtype = np.dtype(">u2" if big_endian else "<u2")
    lut = np.stack([np.frombuffer(ch, dtype=dtype) for ch in channels], axis=-1).astype(np.uint16)
    index = stored.astype(np.intp) - first_map
    np.clip(index, 0, n_entries - 1, out=index)
    return lut[index]


def _text(ds: Dataset, keyword: str) -> str | None:
    """A trimmed string value, or None if absent, empty or unreadable (metadata never fails a read)."""
    try:
        value = ds.get(keyword)
    except _DICOM_ERRORS:
        return None
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _pixel_spacing(ds: Dataset) -> tuple[float, float] | None:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        try:
            value = ds.get(keyword)
            if value is not None and len(value) == 2:
                spacing = (float(value[0]), float(value[1]))
                if all(np.isfinite(s) and s > 0 for s in spacing):
                    return spacing
        except _DICOM_ERRORS:
            continue
    return None


def _dicom_meta(path: Path, ds: Dataset, tsuid: UID) -> dict[str, Any]:
    meta: dict[str, Any] = {"source": "dicom", "path": str(path), "transfer_syntax": tsuid.name}
    for key, keyword in (
        ("modality", "Modality"),
        ("manufacturer", "Manufacturer"),
        ("view", "ViewPosition"),
        ("photometric_interpretation", "PhotometricInterpretation"),
        ("patient_id", "PatientID"),
    ):
        value = _text(ds, keyword)
        if value is not None:
            meta[key] = value
    laterality = _text(ds, "ImageLaterality") or _text(ds, "Laterality")
    if laterality is not None:
        meta["laterality"] = laterality.upper()
    bits = _text(ds, "BitsStored")
    if bits is not None and bits.isdigit():
        meta["bits_stored"] = int(bits)
    spacing = _pixel_spacing(ds)
    if spacing is not None:
        meta["pixel_spacing"] = spacing
    return meta


# --------------------------------------------------------------------------------------------------
# PNG / JPEG / TIFF / other raster formats


def _read_pillow(path: Path, frame: int | None, head: bytes) -> Image:
    if _is_16bit_colour_png(head):
        values = _read_png16_colour(path)
        if values is not None:
            _select_frame(path, frame, 1)
            return _raster_image(path, values, "png", frame)
    try:
        with PILImage.open(path) as img:
            fmt = (img.format or path.suffix.lstrip(".") or "image").lower()
            index = _select_frame(path, frame, int(getattr(img, "n_frames", 1)))
            if index:
                img.seek(index)
            values = _pil_to_array(path, img)
    except UnidentifiedImageError as err:
        raise InputError(path, "is not a DICOM file or an image format Pillow can read") from err
    except PILImage.DecompressionBombError as err:
        raise InputError(path, f"is too large to decode safely ({err})") from err
    except _PIL_ERRORS as err:
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
    return head.startswith(_PNG_MAGIC) and len(head) >= 26 and head[24] == 16 and head[25] in (2, 6)


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


def _read_tiff(path: Path, frame: int | None) -> Image:
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
            page = pages[_select_frame(path, frame, len(pages))]
            if page.photometric == tifffile.PHOTOMETRIC.PALETTE:
                return _read_pillow(path, frame, b"")
            values, axes = page.asarray(), page.axes
            white_is_zero = page.photometric == tifffile.PHOTOMETRIC.MINISWHITE
    except (KeyError, ValueError) as err:
        if "imagecodecs" in str(err):
            return _read_pillow(path, frame, b"")
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
    _check_layout(path, values)
    pixels = _unit_range(path, values)
    meta: dict[str, Any] = {"source": fmt, "path": str(path)}
    if np.issubdtype(values.dtype, np.integer):
        meta["bits_stored"] = values.dtype.itemsize * 8
    if frame is not None:
        meta["frame"] = frame
    return Image(pixels=pixels, meta=meta)
