"""The DICOM back-end of :func:`medseg_weak.data.io.read_image`: decode, Modality LUT, VOI, metadata.

Every failure a file can cause comes out as :class:`~medseg_weak.errors.InputError` naming the file;
the intensity policy (Modality LUT -> VOI -> [0, 1] -> MONOCHROME1 inverted) is documented in
:mod:`medseg_weak.data.io`.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
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
from medseg_weak.data.pixel_scaling import (
    check_layout,
    finite_range,
    scale_in_place,
    select_frame,
    to_float32,
    unit_range,
)
from medseg_weak.errors import InputError

_log = logging.getLogger(__name__)

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


def read_dicom(path: Path, frame: int | None, *, has_marker: bool) -> Image:
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
    index = select_frame(path, frame, n_frames)
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

    check_layout(path, pixels)
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
    lo, hi = finite_range(path, modality)

    lut = _voi_lut_output(path, ds, modality)
    if lut is not None:
        return lut, "voi_lut"
    window = _window(ds)
    x = to_float32(modality)
    if window is not None:
        return _apply_window_in_place(x, *window), "window"
    return scale_in_place(x, lo, hi), "data_range"


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
    x = to_float32(stored)
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
    return scale_in_place(out.astype(np.float32), lo, hi)


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
    _, hi = finite_range(path, stored)
    if np.issubdtype(stored.dtype, np.floating):
        return unit_range(path, stored)
    bits = _dicom_int(path, ds, "BitsStored", default=stored.dtype.itemsize * 8)
    # max() guards against a Bits Stored that understates the data, which would overflow 1.0.
    return scale_in_place(to_float32(stored), 0.0, max(float(2**bits - 1), hi))


def _palette_to_unit(path: Path, ds: Dataset, stored: np.ndarray) -> np.ndarray:
    try:
        rgb = _palette_lookup(ds, stored)
    except _DICOM_ERRORS as err:
        raise InputError(path, f"has an unusable Palette Color lookup table ({err})") from err
    finite_range(path, rgb)
    # Entries are 8 or 16 bit; 8-bit palettes stored in 16-bit entries sit in the high byte.
    return scale_in_place(to_float32(rgb), 0.0, float(np.iinfo(rgb.dtype).max))


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
