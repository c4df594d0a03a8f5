"""Write one grayscale pixel array as a real, standard-conforming mammography DICOM file.

The synthetic benchmark goes through real DICOM on purpose: the reader's paths (bit depths,
MONOCHROME1, rescale, windowing, RLE compression) are then exercised by the demo data itself.
Everything here is deterministic (UIDs hashed from keys, fixed dates), so that the same arguments
give byte-identical files and a resumed run ends identical to an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

from medseg_weak.io_utils import atomic_write

#: Digital Mammography X-Ray Image Storage - For Presentation.
MAMMO_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
_UID_NAMESPACE = "medseg-weak-synth"


@dataclass(frozen=True)
class MammoDicomInfo:
    """What a synthetic mammogram's header says besides its pixels.

    ``study_key`` and ``image_key`` seed the UIDs: images sharing a study key share the Study
    Instance UID, and each image key gives its own Series and SOP Instance UIDs.
    ``window`` is (center, width) and ``rescale`` (slope, intercept), both in modality units.
    """

    patient_id: str
    patient_name: str
    study_key: str
    image_key: str
    laterality: str
    view: str
    manufacturer: str
    model: str
    institution: str
    pixel_spacing_mm: float
    bits_stored: int
    monochrome1: bool
    window: tuple[float, float] | None = None
    rescale: tuple[float, float] | None = None
    rle: bool = False
    study_date: str = "20240115"
    instance_number: int = 1


def deterministic_uid(*keys: str) -> str:
    """A valid UID (pydicom's root + hash of the keys): reruns give the same UID, distinct keys differ."""
    return generate_uid(entropy_srcs=[_UID_NAMESPACE, *keys])


def build_mammo_dataset(pixels: np.ndarray, info: MammoDicomInfo) -> Dataset:
    """The DICOM dataset (file meta included) for a 2-D uint16 pixel array."""
    if pixels.ndim != 2 or pixels.dtype != np.uint16:
        raise ValueError(f"expected a 2-D uint16 array, got {pixels.dtype} {pixels.shape}")
    if int(pixels.max(initial=0)) >= 2**info.bits_stored:
        raise ValueError(f"pixel values exceed BitsStored={info.bits_stored}")
    sop_uid = deterministic_uid(info.image_key, "sop")

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MAMMO_FOR_PRESENTATION
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", ""]
    ds.SOPClassUID = MAMMO_FOR_PRESENTATION
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = deterministic_uid(info.study_key, "study")
    ds.SeriesInstanceUID = deterministic_uid(info.image_key, "series")
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = info.study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "090000"
    ds.AccessionNumber = ""
    ds.StudyID = "1"
    ds.SeriesNumber = info.instance_number
    ds.InstanceNumber = info.instance_number
    ds.Modality = "MG"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.Manufacturer = info.manufacturer
    ds.ManufacturerModelName = info.model
    ds.InstitutionName = info.institution
    ds.PatientName = info.patient_name
    ds.PatientID = info.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "F"
    ds.BodyPartExamined = "BREAST"
    ds.Laterality = info.laterality
    ds.ImageLaterality = info.laterality
    ds.ViewPosition = info.view
    ds.BurnedInAnnotation = "YES"
    ds.PixelSpacing = [info.pixel_spacing_mm, info.pixel_spacing_mm]
    ds.ImagerPixelSpacing = [info.pixel_spacing_mm, info.pixel_spacing_mm]
    _set_pixel_module(ds, pixels, info)
    return ds


def _set_pixel_module(ds: Dataset, pixels: np.ndarray, info: MammoDicomInfo) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if info.monochrome1 else "MONOCHROME2"
    ds.Rows, ds.Columns = (int(n) for n in pixels.shape)
    ds.BitsAllocated = 16
    ds.BitsStored = info.bits_stored
    ds.HighBit = info.bits_stored - 1
    ds.PixelRepresentation = 0
    if info.rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = info.rescale
        ds.RescaleType = "US"
    if info.window is not None:
        ds.WindowCenter, ds.WindowWidth = info.window
        ds.VOILUTFunction = "LINEAR"
    if info.rle:
        # pydicom 3 encodes RLE itself (or via pylibjpeg-rle when installed); both are lossless.
        # Keep our deterministic SOP Instance UID: compress() would otherwise draw a random one.
        ds.compress(RLELossless, np.ascontiguousarray(pixels), generate_instance_uid=False)
    else:
        ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
        ds["PixelData"].VR = "OW"


def write_mammo_dicom(path: Path, pixels: np.ndarray, info: MammoDicomInfo) -> Path:
    """Build the dataset and write it atomically (a killed run never leaves half a file)."""
    ds = build_mammo_dataset(pixels, info)
    return atomic_write(Path(path), lambda tmp: ds.save_as(tmp, enforce_file_format=True))
