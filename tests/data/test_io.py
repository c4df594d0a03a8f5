"""Tests for medseg_weak.data.io.read_image on real DICOMs (pydicom + pydicom-data) and written files.

Real files come from pydicom's own test files (``get_testdata_file`` by exact name; never a glob,
which tries to download) and from the pydicom-data package (module ``data_store``). Broken inputs
are made inside ``tmp_path`` from copies of real files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import tifffile
from PIL import Image as PILImage
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi, apply_windowing, pixel_array
from pydicom.pixels.decoders.base import Decoder
from pydicom.uid import (
    MPEG2MPML,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from medseg_weak.data.image import Image
from medseg_weak.data.io import read_image
from medseg_weak.errors import InputError

try:
    import data_store

    DATA_STORE: Path | None = Path(data_store.__file__).parent / "data"
except ImportError:  # pragma: no cover - pydicom-data is a dev dependency
    DATA_STORE = None


# --------------------------------------------------------------------------------------------------
# helpers


def pydicom_file(name: str) -> Path:
    """A file shipped inside pydicom itself, by exact name (a glob would try the network)."""
    return Path(get_testdata_file(name))


def store_file(name: str) -> Path:
    """A file from the pydicom-data package; skips the test when that package is not installed."""
    if DATA_STORE is None:
        pytest.skip("pydicom-data is not installed (module data_store); pip install pydicom-data")
    path = DATA_STORE / name
    if not path.exists():
        pytest.skip(f"{name} is not in this version of pydicom-data")
    return path


def real_file(name: str) -> Path:
    """A file from pydicom's own test files if it is there, else from pydicom-data."""
    local = Path(pydicom.data.__file__).parent / "test_files" / name
    return pydicom_file(name) if local.exists() else store_file(name)


def assert_unit(image: Image) -> None:
    assert image.pixels.dtype == np.float32
    assert image.pixels.ndim in (2, 3)
    assert image.pixels.flags.c_contiguous
    assert float(image.pixels.min()) >= 0.0
    assert float(image.pixels.max()) <= 1.0


def assert_input_error(path: Path, phrase: str, **kwargs: object) -> InputError:
    """read_image(path) raises InputError whose message names the file and contains ``phrase``."""
    with pytest.raises(InputError) as info:
        read_image(path, **kwargs)
    message = str(info.value)
    assert path.name in message, message
    assert phrase.lower() in message.lower(), message
    return info.value


def make_dataset(
    stored: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    **elements: object,
) -> Dataset:
    """A minimal valid single-frame image dataset holding ``stored`` uncompressed."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "MG"
    bits = bits_stored if bits_stored is not None else stored.dtype.itemsize * 8
    ds.set_pixel_data(stored, photometric, bits)
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    return ds


def write(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def data_range(values: np.ndarray) -> np.ndarray:
    values = values.astype(np.float64)
    return (values - values.min()) / (values.max() - values.min())


# --------------------------------------------------------------------------------------------------
# real DICOMs: transfer syntaxes


def test_uncompressed_mr_small_pixels_and_meta() -> None:
    path = pydicom_file("MR_small.dcm")
    image = read_image(path)
    assert_unit(image)
    assert image.shape == (64, 64)
    meta = image.meta
    assert meta["source"] == "dicom"
    assert meta["path"] == str(path)
    assert meta["modality"] == "MR"
    assert meta["manufacturer"] == "TOSHIBA_MEC"
    assert meta["patient_id"] == "4MR1"
    assert meta["pixel_spacing"] == (0.3125, 0.3125)
    assert meta["bits_stored"] == 16
    assert meta["photometric_interpretation"] == "MONOCHROME2"
    assert meta["transfer_syntax"] == "Explicit VR Little Endian"
    assert "laterality" not in meta  # present but empty in the file: not reported


@pytest.mark.parametrize(
    "name",
    [
        "MR_small_RLE.dcm",  # RLE Lossless
        "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS Lossless
        "MR_small_jp2klossless.dcm",  # JPEG 2000 Lossless
        "MR_small_bigendian.dcm",  # Explicit VR Big Endian
        "MR_small_implicit.dcm",  # Implicit VR Little Endian
    ],
)
def test_compressed_mr_small_equals_uncompressed(name: str) -> None:
    expected = read_image(pydicom_file("MR_small.dcm")).pixels
    image = read_image(pydicom_file(name))
    assert_unit(image)
    np.testing.assert_allclose(image.pixels, expected, atol=1e-6)


@pytest.mark.parametrize(
    ("compressed", "reference", "atol"),
    [
        ("MR2_J2KR.dcm", "MR2_UNCR.dcm", 1e-6),  # JPEG 2000 lossless, 12 bit, rescale + window
        ("MR2_J2KI.dcm", "MR2_UNCI.dcm", 1e-6),  # JPEG 2000 lossy vs its decompressed copy
        ("693_J2KR.dcm", "693_UNCR.dcm", 1e-6),  # CT, signed, rescale intercept -1024
        ("US1_J2KR.dcm", "US1_UNCR.dcm", 1e-6),  # colour YBR_RCT -> RGB
        ("SC_rgb_jpeg_gdcm.dcm", "SC_rgb.dcm", 1e-6),  # JPEG lossless (process 14 SV1), RGB
        ("SC_rgb_rle.dcm", "SC_rgb.dcm", 1e-6),  # RLE, RGB
        ("SC_rgb_rle_16bit.dcm", "SC_rgb_16bit.dcm", 1e-6),  # RLE, 16-bit RGB
        ("SC_rgb_gdcm_KY.dcm", "SC_rgb.dcm", 1e-6),  # JPEG 2000, RGB
    ],
)
def test_pydicom_data_pairs_decode_alike(compressed: str, reference: str, atol: float) -> None:
    a = read_image(real_file(compressed))
    b = read_image(real_file(reference))
    assert_unit(a)
    assert a.shape == b.shape
    np.testing.assert_allclose(a.pixels, b.pixels, atol=atol)


@pytest.mark.filterwarnings("ignore:Expected explicit VR")  # a quirk of this pydicom test file
def test_jpeg_baseline_matches_dcmtk_decompression() -> None:
    # Lossy JPEG: two decoders may round differently by one grey level.
    image = read_image(pydicom_file("SC_rgb_jpeg.dcm"))
    reference = read_image(pydicom_file("SC_rgb_jpeg_dcmd.dcm"))
    assert image.is_colour
    assert image.meta["transfer_syntax"] == "JPEG Baseline (Process 1)"
    np.testing.assert_allclose(image.pixels, reference.pixels, atol=1.5 / 255)


def test_jpeg_baseline_ybr_is_converted_to_rgb() -> None:
    image = read_image(pydicom_file("SC_rgb_jpeg_dcmtk.dcm"))  # YBR_FULL, JPEG baseline
    reference = read_image(store_file("SC_rgb.dcm"))
    assert image.meta["photometric_interpretation"] == "YBR_FULL"
    np.testing.assert_allclose(image.pixels, reference.pixels, atol=0.03)  # lossy + YBR rounding


def test_jpeg_lossless_grey_reads() -> None:
    image = read_image(store_file("JPEG-LL.dcm"))
    assert_unit(image)
    assert image.shape == (1024, 256)
    assert image.meta["transfer_syntax"].startswith("JPEG Lossless")


# --------------------------------------------------------------------------------------------------
# bit depths, LUTs, windowing


@pytest.mark.parametrize("bits", [8, 12, 16])
def test_bit_depths_without_voi_use_the_data_range(tmp_path: Path, bits: int) -> None:
    dtype = np.uint8 if bits == 8 else np.uint16
    top = 2**bits - 1
    stored = np.array([[3, 10, top // 2], [top - 7, 3, 40]], dtype=dtype)
    image = read_image(write(make_dataset(stored, bits_stored=bits), tmp_path / f"b{bits}.dcm"))
    assert image.meta["bits_stored"] == bits
    assert image.meta["intensity"] == "data_range"
    np.testing.assert_allclose(image.pixels, data_range(stored), atol=1e-6)
    assert image.pixels.min() == 0.0 and image.pixels.max() == 1.0


@pytest.mark.parametrize(
    ("name", "bits"),
    [("JPGLosslessP14SV1_1s_1f_8b.dcm", 8), ("MR2_UNCR.dcm", 12), ("693_UNCR.dcm", 14)],
)
def test_real_files_of_several_bit_depths(name: str, bits: int) -> None:
    image = read_image(store_file(name))
    assert_unit(image)
    assert image.meta["bits_stored"] == bits


def test_window_known_values_after_rescale(tmp_path: Path) -> None:
    stored = np.array([[0, 100, 200, 300], [350, 400, 500, 1000]], dtype=np.uint16)
    # modality = 2 * stored - 100; LINEAR window c=500, w=401 ramps over (299.5, 699.5].
    ds = make_dataset(
        stored, bits_stored=12, RescaleSlope=2, RescaleIntercept=-100, WindowCenter=500, WindowWidth=401
    )
    image = read_image(write(ds, tmp_path / "win.dcm"))
    assert image.meta["intensity"] == "window"
    modality = 2.0 * stored - 100
    expected = np.clip((modality - 499.5) / 400 + 0.5, 0, 1)
    np.testing.assert_allclose(image.pixels, expected, atol=1e-6)
    assert image.pixels[0, 3] == pytest.approx(0.50125)  # stored 300 -> modality 500
    assert image.pixels[0, 0] == 0.0 and image.pixels[1, 3] == 1.0  # saturated outside the window


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
def test_window_functions_match_pydicom_reference(tmp_path: Path, function: str) -> None:
    stored = np.arange(0, 4096, 16, dtype=np.uint16).reshape(16, 16)
    ds = make_dataset(
        stored, bits_stored=12, RescaleSlope=1, RescaleIntercept=0, WindowCenter=2000, WindowWidth=1500
    )
    ds.VOILUTFunction = function
    image = read_image(write(ds, tmp_path / "w.dcm"))
    # pydicom maps to [0, 2**BitsStored - 1]; ours maps the same curve to [0, 1].
    ref = apply_windowing(apply_modality_lut(stored, ds), ds) / 4095.0
    np.testing.assert_allclose(image.pixels, ref, atol=1e-5)


def test_ct_window_matches_pydicom_on_a_real_file() -> None:
    path = store_file("693_UNCR.dcm")  # rescale intercept -1024, window 40 / 100 (soft tissue)
    ds = pydicom.dcmread(path)
    ref = apply_windowing(apply_modality_lut(pixel_array(ds), ds), ds)
    # The window saturates at both ends of this image, so min/max are pydicom's output range.
    ref = (ref - ref.min()) / (ref.max() - ref.min())
    image = read_image(path)
    assert image.meta["intensity"] == "window"
    assert image.pixels.min() == 0.0 and image.pixels.max() == 1.0
    np.testing.assert_allclose(image.pixels, ref, atol=1e-5)


def test_rescale_sign_and_data_range(tmp_path: Path) -> None:
    stored = np.array([[0, 5, 10], [20, 40, 80]], dtype=np.uint16)
    plain = read_image(write(make_dataset(stored), tmp_path / "plain.dcm")).pixels
    scaled = make_dataset(stored, RescaleSlope=2.5, RescaleIntercept=-7)
    negative = make_dataset(stored, RescaleSlope=-1, RescaleIntercept=100)
    # A positive linear rescale cannot change a min-max scaled image; a negative one inverts it.
    np.testing.assert_allclose(read_image(write(scaled, tmp_path / "s.dcm")).pixels, plain, atol=1e-6)
    np.testing.assert_allclose(read_image(write(negative, tmp_path / "n.dcm")).pixels, 1 - plain, atol=1e-6)


def test_float32_rescale_matches_pydicom_apply_modality_lut(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    stored = rng.integers(0, 4096, (32, 32), dtype=np.uint16)
    ds = make_dataset(stored, bits_stored=12, RescaleSlope=0.37, RescaleIntercept=-300.5)
    ds.WindowCenter, ds.WindowWidth = 500, 900
    image = read_image(write(ds, tmp_path / "r.dcm"))
    modality = apply_modality_lut(stored, ds)  # float64 reference
    expected = np.clip((modality - 499.5) / 899 + 0.5, 0, 1)
    np.testing.assert_allclose(image.pixels, expected, atol=1e-5)


def test_modality_lut_sequence_matches_pydicom() -> None:
    path = store_file("mlut_18.dcm")
    ds = pydicom.dcmread(path)
    expected = data_range(apply_modality_lut(pixel_array(ds), ds))
    np.testing.assert_allclose(read_image(path).pixels, expected, atol=1e-6)


def test_voi_lut_sequence_matches_pydicom() -> None:
    path = store_file("vlut_04.dcm")
    ds = pydicom.dcmread(path)
    lut = np.asarray(ds.VOILUTSequence[0].LUTData, dtype=np.float64)
    expected = (apply_voi(pixel_array(ds), ds).astype(np.float64) - lut.min()) / (lut.max() - lut.min())
    image = read_image(path)
    assert image.meta["intensity"] == "voi_lut"
    np.testing.assert_allclose(image.pixels, expected, atol=1e-6)


def test_voi_lut_is_scaled_by_its_entries_not_its_descriptor(tmp_path: Path) -> None:
    # A 16-bit descriptor whose entries only reach 4095 (a common vendor habit) must still span [0, 1].
    stored = np.array([[0, 100], [1000, 3000]], dtype=np.uint16)
    ds = make_dataset(stored, bits_stored=12)
    item = Dataset()
    item.add_new("LUTDescriptor", "US", [4096, 0, 16])
    item.add_new("LUTData", "US", [min(2 * i, 4095) for i in range(4096)])
    ds.VOILUTSequence = [item]
    image = read_image(write(ds, tmp_path / "voi.dcm"))
    expected = np.minimum(2.0 * stored, 4095) / 4095
    np.testing.assert_allclose(image.pixels, expected, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# MONOCHROME1


def test_monochrome1_inverted_equals_monochrome2(tmp_path: Path) -> None:
    stored = np.array([[0, 100, 2000], [4095, 7, 1500]], dtype=np.uint16)
    mono2 = make_dataset(stored, bits_stored=12)
    mono1 = make_dataset((4095 - stored).astype(np.uint16), photometric="MONOCHROME1", bits_stored=12)
    a = read_image(write(mono2, tmp_path / "m2.dcm"))
    b = read_image(write(mono1, tmp_path / "m1.dcm"))
    assert b.meta["photometric_interpretation"] == "MONOCHROME1"
    np.testing.assert_allclose(b.pixels, a.pixels, atol=1e-6)
    assert b.pixels[1, 0] == 1.0  # stored 0 in MONOCHROME1 is white, i.e. the densest value


def test_real_monochrome1_with_window_is_inverted_after_voi(tmp_path: Path) -> None:
    path = store_file("RG3_UNCR.dcm")  # CR, MONOCHROME1, window 550 / 1024
    ds = pydicom.dcmread(path)
    ds.PhotometricInterpretation = "MONOCHROME2"
    flipped = read_image(write(ds, tmp_path / "rg3_mono2.dcm")).pixels
    image = read_image(path)
    assert image.meta["laterality"] == "R"
    assert image.meta["view"] == "AP"
    np.testing.assert_allclose(image.pixels, 1.0 - flipped, atol=1e-6)
    # And the JPEG 2000 lossless copy decodes to the same picture.
    np.testing.assert_allclose(read_image(store_file("RG3_J2KR.dcm")).pixels, image.pixels, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# multi-frame, colour, palette


def test_multi_frame_needs_frame_argument() -> None:
    path = store_file("emri_small.dcm")
    err = assert_input_error(path, "10 frames")
    assert "frame=" in str(err)


def test_multi_frame_selects_frame_k() -> None:
    path = store_file("emri_small.dcm")
    ds = pydicom.dcmread(path)
    image = read_image(path, frame=3)
    assert image.shape == (64, 64)
    assert image.meta["frame"] == 3 and image.meta["number_of_frames"] == 10
    np.testing.assert_allclose(image.pixels, data_range(pixel_array(ds)[3]), atol=1e-6)
    # The same frame from compressed copies of the file.
    for name in ("emri_small_RLE.dcm", "emri_small_jpeg_ls_lossless.dcm", "emri_small_jpeg_2k_lossless.dcm"):
        np.testing.assert_allclose(read_image(store_file(name), frame=3).pixels, image.pixels, atol=1e-6)


@pytest.mark.parametrize("frame", [10, -1])
def test_multi_frame_out_of_range(frame: int) -> None:
    assert_input_error(store_file("emri_small.dcm"), "out of range", frame=frame)


def test_single_frame_accepts_frame_zero_only() -> None:
    path = pydicom_file("MR_small.dcm")
    np.testing.assert_array_equal(read_image(path, frame=0).pixels, read_image(path).pixels)
    assert_input_error(path, "out of range", frame=1)


def test_colour_frame_of_multi_frame_rgb() -> None:
    path = store_file("SC_rgb_2frame.dcm")
    ds = pydicom.dcmread(path)
    image = read_image(path, frame=1)
    assert image.is_colour and image.shape == (100, 100, 3)
    np.testing.assert_allclose(image.pixels, pixel_array(ds)[1] / 255.0, atol=1e-6)


def test_rgb_is_scaled_by_bit_depth() -> None:
    for name, top in (("SC_rgb.dcm", 255.0), ("SC_rgb_16bit.dcm", 65535.0)):
        path = store_file(name)
        image = read_image(path)
        assert image.is_colour
        assert image.meta["intensity"] == "bit_depth"
        np.testing.assert_allclose(image.pixels, pixel_array(pydicom.dcmread(path)) / top, atol=1e-6)


def test_ybr_full_uncompressed_is_converted_to_rgb() -> None:
    image = read_image(store_file("SC_ybr_full_uncompressed.dcm"))
    np.testing.assert_allclose(image.pixels, read_image(store_file("SC_rgb.dcm")).pixels, atol=0.03)


def test_palette_colour_is_expanded_and_endianness_is_right() -> None:
    little = store_file("OBXXXX1A.dcm")
    ds = pydicom.dcmread(little)
    image = read_image(little)
    assert image.is_colour and image.meta["intensity"] == "palette_lut"
    expected = apply_color_lut(pixel_array(ds), ds)[..., :3] / 65535.0
    np.testing.assert_allclose(image.pixels, expected, atol=1e-6)
    # pydicom 3.0's apply_color_lut byte-swaps this big-endian copy; read_image must not.
    np.testing.assert_array_equal(read_image(store_file("OBXXXX1A_expb.dcm")).pixels, image.pixels)


# --------------------------------------------------------------------------------------------------
# metadata, headerless files, float pixel data, speed


def test_meta_fields_are_filled(tmp_path: Path) -> None:
    stored = np.arange(20, dtype=np.uint16).reshape(4, 5)
    ds = make_dataset(
        stored,
        bits_stored=12,
        Manufacturer="ACME Imaging",
        ImageLaterality="L",
        Laterality="R",  # ImageLaterality wins
        ViewPosition="MLO",
        PatientID="P-007",
        ImagerPixelSpacing=[0.07, 0.065],
    )
    meta = read_image(write(ds, tmp_path / "meta.dcm")).meta
    assert meta["modality"] == "MG"
    assert meta["manufacturer"] == "ACME Imaging"
    assert meta["laterality"] == "L"
    assert meta["view"] == "MLO"
    assert meta["patient_id"] == "P-007"
    assert meta["bits_stored"] == 12
    assert meta["pixel_spacing"] == pytest.approx((0.07, 0.065))
    assert meta["photometric_interpretation"] == "MONOCHROME2"
    assert meta["transfer_syntax"] == "Explicit VR Little Endian"
    assert meta["source"] == "dicom"

    del ds.ImageLaterality
    ds.PixelSpacing = [0.1, 0.2]  # PixelSpacing is preferred over ImagerPixelSpacing
    meta = read_image(write(ds, tmp_path / "meta2.dcm")).meta
    assert meta["laterality"] == "R"
    assert meta["pixel_spacing"] == (0.1, 0.2)


def test_headerless_dicom_named_by_uid_is_read(tmp_path: Path) -> None:
    stored = np.arange(48, dtype=np.uint16).reshape(6, 8)
    ds = make_dataset(stored, bits_stored=12)
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, True
    write_dataset(fp, ds)  # no preamble, no 'DICM', no file meta: as some old archives store them
    path = tmp_path / "1.2.840.113619.2.55.3.42"
    path.write_bytes(fp.getvalue())
    image = read_image(path)
    assert image.meta["transfer_syntax"] == ImplicitVRLittleEndian.name
    np.testing.assert_allclose(image.pixels, data_range(stored), atol=1e-6)


def float_pixel_dataset(values: np.ndarray) -> Dataset:
    ds = make_dataset(np.zeros((2, 2), dtype=np.uint16))
    for keyword in ("PixelData", "BitsStored", "HighBit", "PixelRepresentation"):
        delattr(ds, keyword)
    ds.Rows, ds.Columns = values.shape
    ds.BitsAllocated = 32
    ds.FloatPixelData = values.astype(np.float32).tobytes()
    return ds


def test_float_pixel_data_is_read(tmp_path: Path) -> None:
    values = np.linspace(-1, 3, 12, dtype=np.float32).reshape(3, 4)
    image = read_image(write(float_pixel_dataset(values), tmp_path / "float.dcm"))
    np.testing.assert_allclose(image.pixels, data_range(values), atol=1e-6)


def test_full_size_mammogram_decodes(tmp_path: Path) -> None:
    # Speed is measured in scripts/bench/bench_data.py, not asserted here.
    stored = np.random.default_rng(1).integers(0, 4096, (4500, 3000), dtype=np.uint16)
    path = write(
        make_dataset(stored, bits_stored=12, WindowCenter=2000, WindowWidth=3000), tmp_path / "big.dcm"
    )
    image = read_image(path)
    assert image.shape == (4500, 3000) and image.pixels.dtype == np.float32
    assert image.pixels.min() == 0.0 and image.pixels.max() == 1.0


# --------------------------------------------------------------------------------------------------
# ordinary image formats


def test_png_8bit_grey(tmp_path: Path) -> None:
    values = np.array([[0, 51, 255], [128, 1, 254]], dtype=np.uint8)
    path = tmp_path / "g8.png"
    PILImage.fromarray(values).save(path)
    image = read_image(path)
    assert image.meta["source"] == "png" and image.meta["bits_stored"] == 8
    np.testing.assert_allclose(image.pixels, values / 255.0, atol=1e-7)


def test_png_16bit_grey_keeps_16bit_precision(tmp_path: Path) -> None:
    values = np.array([[0, 1, 2], [257, 65534, 65535]], dtype=np.uint16)
    path = tmp_path / "g16.png"
    PILImage.fromarray(values).save(path)
    image = read_image(path)
    assert image.meta["bits_stored"] == 16
    np.testing.assert_allclose(image.pixels, values / 65535.0, rtol=1e-6, atol=0)
    assert image.pixels[0, 1] != image.pixels[0, 2]  # distinct only at 16-bit precision


def test_png_16bit_colour_keeps_16bit_precision(tmp_path: Path) -> None:
    cv2 = pytest.importorskip("cv2")
    rgb = np.zeros((4, 5, 3), dtype=np.uint16)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 1, 300, 65535
    rgb[0, 0] = (0, 0, 0)
    path = tmp_path / "c16.png"
    cv2.imwrite(str(path), rgb[..., ::-1])  # OpenCV writes BGR
    image = read_image(path)
    np.testing.assert_allclose(image.pixels, rgb / 65535.0, rtol=1e-6, atol=0)


def test_png_rgb_rgba_and_palette(tmp_path: Path) -> None:
    rgb = np.random.default_rng(2).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    PILImage.fromarray(rgb).save(tmp_path / "rgb.png")
    rgba = np.dstack([rgb, np.full((6, 7), 9, np.uint8)])
    PILImage.fromarray(rgba).save(tmp_path / "rgba.png")
    PILImage.fromarray(rgb).quantize(8).save(tmp_path / "pal.png")
    for name in ("rgb.png", "rgba.png"):
        image = read_image(tmp_path / name)
        assert image.is_colour
        np.testing.assert_allclose(image.pixels, rgb / 255.0, atol=1e-7)
    assert read_image(tmp_path / "pal.png").shape == (6, 7, 3)


def test_tiff_uint16_float_and_lzw(tmp_path: Path) -> None:
    values = np.array([[0, 1000], [40000, 65535]], dtype=np.uint16)
    tifffile.imwrite(tmp_path / "u16.tif", values)
    np.testing.assert_allclose(read_image(tmp_path / "u16.tif").pixels, values / 65535.0, rtol=1e-6)
    # tifffile needs imagecodecs for LZW; read_image falls back to Pillow for such files.
    PILImage.fromarray(values).save(tmp_path / "lzw.tif", compression="tiff_lzw")
    np.testing.assert_allclose(read_image(tmp_path / "lzw.tif").pixels, values / 65535.0, rtol=1e-6)

    unit = np.array([[0.0, 0.25], [0.5, 0.75]], dtype=np.float32)
    tifffile.imwrite(tmp_path / "unit.tif", unit)
    np.testing.assert_array_equal(read_image(tmp_path / "unit.tif").pixels, unit)  # already [0, 1]
    wide = np.array([[-5.0, 0.0], [5.0, 15.0]], dtype=np.float64)
    tifffile.imwrite(tmp_path / "wide.tif", wide)
    np.testing.assert_allclose(read_image(tmp_path / "wide.tif").pixels, data_range(wide), atol=1e-7)


def test_tiff_16bit_colour_and_pages(tmp_path: Path) -> None:
    rgb = np.random.default_rng(3).integers(0, 65536, (5, 6, 3), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "c16.tif", rgb, photometric="rgb")
    np.testing.assert_allclose(read_image(tmp_path / "c16.tif").pixels, rgb / 65535.0, rtol=1e-6)

    stack = np.stack([np.full((4, 4), k, np.uint8) for k in range(3)])
    stack[:, 0, 0] = 255
    tifffile.imwrite(tmp_path / "pages.tif", stack, photometric="minisblack")
    assert_input_error(tmp_path / "pages.tif", "3 frames")
    np.testing.assert_allclose(read_image(tmp_path / "pages.tif", frame=2).pixels, stack[2] / 255.0)


def test_tiff_planar_rgb_and_min_is_white(tmp_path: Path) -> None:
    planar = np.random.default_rng(5).integers(0, 256, (3, 4, 4), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "planar.tif", planar, photometric="rgb", planarconfig="separate")
    image = read_image(tmp_path / "planar.tif")
    np.testing.assert_allclose(image.pixels, np.moveaxis(planar, 0, -1) / 255.0, atol=1e-7)
    grey = np.array([[0, 10], [200, 255]], dtype=np.uint8)
    tifffile.imwrite(tmp_path / "white0.tif", grey, photometric="miniswhite")
    np.testing.assert_allclose(read_image(tmp_path / "white0.tif").pixels, 1 - grey / 255.0, atol=1e-7)


def test_jpeg_file(tmp_path: Path) -> None:
    values = np.tile(np.linspace(0, 255, 32, dtype=np.uint8), (16, 1))
    path = tmp_path / "photo.jpg"
    PILImage.fromarray(values).save(path, quality=95)
    image = read_image(path)
    assert image.meta["source"] == "jpeg"
    np.testing.assert_allclose(image.pixels, values / 255.0, atol=0.03)  # lossy


def test_jpeg_exif_orientation_is_applied(tmp_path: Path) -> None:
    values = np.zeros((8, 16), dtype=np.uint8)
    values[:, :8] = 255
    img = PILImage.fromarray(values)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif, quality=95)
    assert read_image(path).shape == (16, 8)


# --------------------------------------------------------------------------------------------------
# broken and unusable inputs


def test_missing_path(tmp_path: Path) -> None:
    assert_input_error(tmp_path / "nowhere.dcm", "not found")


def test_directory(tmp_path: Path) -> None:
    folder = tmp_path / "scans.dcm"
    folder.mkdir()
    assert_input_error(folder, "directory")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.dcm"
    path.write_bytes(b"")
    assert_input_error(path, "empty")


def test_text_file_renamed_dcm(tmp_path: Path) -> None:
    path = tmp_path / "notes.dcm"
    path.write_text("patient notes, not an image\n" * 20)
    assert_input_error(path, "not a DICOM file")


def test_text_file_renamed_png(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("patient notes, not an image\n" * 20)
    assert_input_error(path, "not a DICOM file or an image format")


def test_truncated_uncompressed_dicom(tmp_path: Path) -> None:
    data = pydicom_file("MR_small.dcm").read_bytes()
    path = tmp_path / "half.dcm"
    path.write_bytes(data[: len(data) // 2])
    assert_input_error(path, "truncated")


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about each damaged element
def test_truncated_compressed_dicom(tmp_path: Path) -> None:
    # pydicom silently drops an encapsulated element cut by end-of-file; it must not read as
    # "no pixel data" but as truncated.
    data = pydicom_file("MR_small_jp2klossless.dcm").read_bytes()
    path = tmp_path / "half_j2k.dcm"
    path.write_bytes(data[: len(data) // 2])
    assert_input_error(path, "truncated")


def test_pixel_data_removed(tmp_path: Path) -> None:
    ds = pydicom.dcmread(pydicom_file("MR_small.dcm"))
    del ds.PixelData
    assert_input_error(write(ds, tmp_path / "nopix.dcm"), "no pixel data")


def test_non_image_dicom() -> None:
    err = assert_input_error(pydicom_file("rtplan.dcm"), "no pixel data")
    assert "RT Plan Storage" in str(err)


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about each damaged element
def test_flipped_header_bytes(tmp_path: Path) -> None:
    data = bytearray(pydicom_file("MR_small.dcm").read_bytes())
    data[140:148] = bytes(b ^ 0xFF for b in data[140:148])  # the file meta group length
    path = tmp_path / "badhdr.dcm"
    path.write_bytes(bytes(data))
    assert_input_error(path, "corrupt")


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about each damaged element
def test_flipped_bytes_in_compressed_pixel_data(tmp_path: Path) -> None:
    data = bytearray(pydicom_file("MR_small_jp2klossless.dcm").read_bytes())
    start = data.find(b"\xff\x4f\xff\x51")  # JPEG 2000 SOC + SIZ markers
    assert start > 0
    data[start + 4 : start + 40] = b"\xff" * 36  # destroy the image size segment
    path = tmp_path / "bad_j2k.dcm"
    path.write_bytes(bytes(data))
    assert_input_error(path, "could not be decoded")


def test_corrupt_rle_segment_is_an_input_error(tmp_path: Path) -> None:
    # pylibjpeg-rle (Rust) panics on this, and pyo3's PanicException is a BaseException that
    # pydicom's plugin fallback does not catch; read_image must still turn it into an InputError.
    data = bytearray(pydicom_file("MR_small_RLE.dcm").read_bytes())
    basic_offset_table = data.find(b"\xfe\xff\x00\xe0", data.find(b"\xe0\x7f\x10\x00"))
    fragment = data.find(b"\xfe\xff\x00\xe0", basic_offset_table + 8)
    data[fragment + 8 + 64] = 0x81  # first RLE run: "repeat next byte 128 times" overruns the frame
    path = tmp_path / "bad_rle.dcm"
    path.write_bytes(bytes(data))
    assert_input_error(path, "could not be decoded")


def test_flipped_bytes_in_uncompressed_pixel_data_still_read(tmp_path: Path) -> None:
    # Damage to raw pixel values is undetectable: the file must still read, without a crash.
    data = bytearray(pydicom_file("MR_small.dcm").read_bytes())
    data[-100:-90] = bytes(b ^ 0xFF for b in data[-100:-90])
    path = tmp_path / "flipped_pixels.dcm"
    path.write_bytes(bytes(data))
    assert_unit(read_image(path))


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about each damaged element
def test_random_corruption_never_leaks_a_bare_exception(tmp_path: Path) -> None:
    rng = np.random.default_rng(1234)
    sources = [pydicom_file(n) for n in ("MR_small.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm")]
    PILImage.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16)).save(tmp_path / "src.png")
    sources.append(tmp_path / "src.png")
    for trial in range(60):
        source = sources[trial % len(sources)]
        data = bytearray(source.read_bytes())
        if trial % 2:
            data = data[: int(rng.integers(1, len(data)))]
        else:
            for i in rng.integers(0, len(data), 6):
                data[i] = int(rng.integers(0, 256))
        path = tmp_path / f"fuzz{trial}{source.suffix}"
        path.write_bytes(bytes(data))
        try:
            assert_unit(read_image(path))
        except InputError as err:
            assert path.name in str(err)


@pytest.mark.filterwarnings("ignore:Invalid value for VR IS")  # the point of this file
def test_invalid_number_of_frames() -> None:
    assert_input_error(pydicom_file("badVR.dcm"), "NumberOfFrames")


def test_zero_size_image(tmp_path: Path) -> None:
    ds = make_dataset(np.zeros((2, 2), dtype=np.uint16))
    ds.Rows = 0
    ds.PixelData = b""
    assert_input_error(write(ds, tmp_path / "zero.dcm"), "zero-size")


def test_constant_dicom_and_png(tmp_path: Path) -> None:
    ds = make_dataset(np.full((8, 8), 700, dtype=np.uint16), bits_stored=12)
    assert_input_error(write(ds, tmp_path / "flat.dcm"), "same value")
    PILImage.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(tmp_path / "black.png")
    assert_input_error(tmp_path / "black.png", "same value")


def test_nan_and_inf_pixels(tmp_path: Path) -> None:
    values = np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4)
    values[1, 2] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", values)
    assert_input_error(tmp_path / "nan.tif", "NaN/inf")
    values[1, 2] = np.inf
    tifffile.imwrite(tmp_path / "inf.tif", values)
    assert_input_error(tmp_path / "inf.tif", "NaN/inf")
    values[1, 2] = np.nan
    assert_input_error(write(float_pixel_dataset(values), tmp_path / "nan.dcm"), "1 NaN/inf")


def test_truncated_png_and_tiff(tmp_path: Path) -> None:
    values = np.random.default_rng(4).integers(0, 65536, (64, 64), dtype=np.uint16)
    PILImage.fromarray(values).save(tmp_path / "full.png")
    tifffile.imwrite(tmp_path / "full.tif", values)
    for name in ("full.png", "full.tif"):
        data = (tmp_path / name).read_bytes()
        cut = tmp_path / f"cut_{name}"
        cut.write_bytes(data[: len(data) // 2])
        assert_input_error(cut, "truncated or corrupt")


def test_no_decoder_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    # Make every compressed-syntax decoder report that no plugin is installed, as on a machine
    # without pylibjpeg; uncompressed files must still read.
    monkeypatch.setattr(Decoder, "is_available", property(lambda self: not self.UID.is_encapsulated))
    err = assert_input_error(pydicom_file("MR_small_jp2klossless.dcm"), "no decoder installed")
    assert "JPEG 2000" in str(err) and "pylibjpeg-openjpeg" in str(err)
    err = assert_input_error(pydicom_file("MR_small_jpeg_ls_lossless.dcm"), "no decoder installed")
    assert "JPEG-LS" in str(err) and "pylibjpeg-libjpeg" in str(err)
    assert_unit(read_image(pydicom_file("MR_small.dcm")))


def test_transfer_syntax_without_any_decoder(tmp_path: Path) -> None:
    ds = pydicom.dcmread(pydicom_file("MR_small_jp2klossless.dcm"))
    ds.file_meta.TransferSyntaxUID = MPEG2MPML
    err = assert_input_error(write(ds, tmp_path / "video.dcm"), "no pixel data decoder")
    assert "MPEG2" in str(err)


# --------------------------------------------------------------------------------------------------
# read_mask: raw integer labels, empty masks allowed


def test_read_mask_keeps_raw_values_and_allows_empty(tmp_path):
    from medseg_weak.data.io import read_mask

    bits = np.zeros((6, 5), np.uint8)
    bits[1, 1], bits[2, 3] = 5, 255
    PILImage.fromarray(bits).save(tmp_path / "bits.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "bits.png"), bits)
    PILImage.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "empty.png")
    assert not read_mask(tmp_path / "empty.png").any()


def test_read_mask_errors_name_the_file(tmp_path):
    from medseg_weak.data.io import read_mask

    PILImage.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(InputError, match=r"rgb\.png: mask must be single-channel"):
        read_mask(tmp_path / "rgb.png")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(InputError, match=r"text\.png"):
        read_mask(tmp_path / "text.png")
    with pytest.raises(InputError, match=r"missing\.png"):
        read_mask(tmp_path / "missing.png")
