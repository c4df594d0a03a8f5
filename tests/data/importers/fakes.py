"""Tiny copies of each dataset's layout: the real CSV headers and folder structure, a few small images.

Every builder returns the ``import_dataset`` keyword arguments for its layout; each layout holds one
awkward case of its dataset (missing density, spelling variants, JPEG masks, ...). DICOMs are
written by the project's own writer (64 x 48 pixels); JPEGs by Pillow.
"""

from __future__ import annotations

import csv
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image as PILImage

from medseg_weak.data.synthetic.dicom_writer import MammoDicomInfo, write_mammo_dicom

SHAPE = (64, 48)


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_dicom(
    path: Path,
    key: str,
    patient: str = "P1",
    laterality: str = "L",
    view: str = "CC",
    manufacturer: str = "Siemens",
    model: str = "Mammomat Inspiration",
    institution: str = "Hospital A",
) -> Path:
    rng = np.random.default_rng(zlib.crc32(key.encode()))
    pixels = rng.integers(0, 4000, size=SHAPE, dtype=np.uint16)
    info = MammoDicomInfo(
        patient_id=patient,
        patient_name="Doe^Jane",
        study_key=f"{patient}-study",
        image_key=key,
        laterality=laterality,
        view=view,
        manufacturer=manufacturer,
        model=model,
        institution=institution,
        pixel_spacing_mm=0.1,
        bits_stored=12,
        monochrome1=False,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_mammo_dicom(path, pixels, info)


def write_jpeg(path: Path, values: np.ndarray, quality: int = 75) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray(values.astype(np.uint8)).save(path, format="JPEG", quality=quality)
    return path


def disc_mask(
    shape: tuple[int, int] = SHAPE, centre: tuple[int, int] = (30, 20), radius: int = 12
) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return ((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2).astype(np.uint8) * 255


# --------------------------------------------------------------------------------------------------
# one builder per format


def rsna(root: Path) -> dict[str, Any]:
    header = [
        "site_id", "patient_id", "image_id", "laterality", "view", "age", "cancer", "biopsy", "invasive",
        "BIRADS", "implant", "density", "machine_id", "difficult_negative_case",
    ]  # fmt: skip
    rows = [
        [1, 10006, 462822612, "L", "CC", 61, 0, 0, 0, "", 0, "B", 29, "False"],
        [1, 10006, 1459541791, "L", "MLO", 61, 0, 0, 0, "", 0, "B", 29, "False"],
        [2, 10011, 220375232, "R", "CC", 55, 0, 0, 0, 0, 0, "", 21, "True"],  # no density: dropped
        [2, 10011, 270344397, "R", "MLO", 55, 0, 0, 0, 0, 0, "D", 21, "True"],
    ]
    write_csv(root / "train.csv", header, rows)
    for row in rows:
        write_dicom(root / "train_images" / str(row[1]) / f"{row[2]}.dcm", str(row[2]), str(row[1]))
    return {}


VINDR_HEADER = [
    "study_id", "series_id", "image_id", "laterality", "view_position", "height", "width",
    "breast_birads", "breast_density", "split",
]  # fmt: skip


def vindr(root: Path) -> dict[str, Any]:
    rows = [
        ["s1", "r1", "i1", "L", "CC", 64, 48, "BI-RADS 1", "DENSITY A", "training"],
        ["s1", "r2", "i2", "R", "MLO", 64, 48, "BI-RADS 2", "DENSITY C", "training"],
        ["s2", "r3", "i3", "L", "CC", 64, 48, "BI-RADS 1", "DENSITY D", "test"],
        ["s2", "r4", "i4", "R", "CC", 64, 48, "BI-RADS 1", "DENSITY E", "test"],  # outside the map
    ]
    write_csv(root / "breast-level_annotations.csv", VINDR_HEADER, rows)
    models = {"i1": "Mammomat Inspiration", "i2": "Mammomat Inspiration", "i3": "Planmed Nuance", "i4": "X"}
    for row in rows:
        write_dicom(root / "images" / row[0] / f"{row[2]}.dicom", row[2], row[0], model=models[row[2]])
    # metadata.csv lists i1 and i3 only: i2's scanner must come from its DICOM header
    write_csv(
        root / "metadata.csv",
        ["SOP Instance UID", "Series Instance UID", "Manufacturer", "Manufacturer's Model Name"],
        [["i1", "r1", "SIEMENS", "Mammomat Inspiration"], ["i3", "r3", "Planmed", "Planmed Nuance"]],
    )
    return {}


def vindr_dense_masks(root: Path) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    names = ["a1", "a2", "a3"]
    for name in names:
        write_jpeg(root / "images" / f"{name}.jpg", rng.integers(0, 255, size=SHAPE))
        write_jpeg(root / "breast_masks" / f"{name}.jpg", np.full(SHAPE, 255))
    write_jpeg(root / "dense_masks" / "a1.jpg", disc_mask())
    write_jpeg(root / "dense_masks" / "a2.jpg", disc_mask(centre=(20, 30), radius=8))
    # a3 has no dense mask: kept without one
    write_csv(
        root / "train.csv", ["Filename", "Density"], [["a1.jpg", 12.5], ["a2.jpg", 60.0], ["a3.jpg", 80]]
    )
    return {}


MASS_HEADER = [
    "patient_id", "breast_density", "left or right breast", "image view", "abnormality id",
    "abnormality type", "mass shape", "mass margins", "assessment", "pathology", "subtlety",
    "image file path", "cropped image file path", "ROI mask file path",
]  # fmt: skip
CALC_HEADER = [
    "patient_id", "breast density", "left or right breast", "image view", "abnormality id",
    "abnormality type", "calc type", "calc distribution", "assessment", "pathology", "subtlety",
    "image file path", "cropped image file path", "ROI mask file path",
]  # fmt: skip


def _cbis_row(patient: str, density: Any, side: str, view: str, case: str, lesion: int) -> list[Any]:
    path = f"{case}/1.3.6.1.4.1.9590.100.1.2.1/1.3.6.1.4.1.9590.100.1.2.2/000000.dcm"
    return [patient, density, side, view, lesion, "mass", "OVAL", "CIRCUMSCRIBED", 4, "BENIGN", 4, path,
            f"{case}_{lesion}/x/y/000000.dcm", f"{case}_{lesion}/x/y/000001.dcm"]  # fmt: skip


def cbis_ddsm(root: Path) -> dict[str, Any]:
    mass_train = [
        _cbis_row("P_00001", 3, "LEFT", "CC", "Mass-Training_P_00001_LEFT_CC", 1),
        _cbis_row("P_00001", 3, "LEFT", "CC", "Mass-Training_P_00001_LEFT_CC", 2),  # second lesion: merged
        _cbis_row("P_00004", 1, "RIGHT", "MLO", "Mass-Training_P_00004_RIGHT_MLO", 1),
    ]
    calc_test = [
        _cbis_row("P_00004", 1, "LEFT", "CC", "Calc-Test_P_00004_LEFT_CC", 1),  # P_00004 also in test
        _cbis_row("P_00005", 0, "RIGHT", "CC", "Calc-Test_P_00005_RIGHT_CC", 1),  # density 0: outside 1-4
    ]
    write_csv(root / "mass_case_description_train_set.csv", MASS_HEADER, mass_train)
    write_csv(root / "calc_case_description_test_set.csv", CALC_HEADER, calc_test)
    # the NBIA downloader's folder names, not the CSV's UIDs
    for case in (
        "Mass-Training_P_00001_LEFT_CC",
        "Mass-Training_P_00004_RIGHT_MLO",
        "Calc-Test_P_00004_LEFT_CC",
    ):
        dicom = root / "CBIS-DDSM" / case / "08-07-2016-DDSM-74994" / "1.000000-full mammogram images-24515"
        write_dicom(dicom / "1-1.dcm", case, case.split("_", 1)[1][:7])
    write_dicom(root / "CBIS-DDSM" / "Calc-Test_P_00005_RIGHT_CC" / "a" / "b" / "1-1.dcm", "p5", "P_00005")
    return {}


def embed(root: Path) -> dict[str, Any]:
    write_csv(
        root / "tables" / "EMBED_OpenData_clinical.csv",
        ["empi_anon", "acc_anon", "study_date_anon", "desc", "numfind", "side", "asses", "tissueden"],
        [
            [1, 100, "2015-01-01", "MG Screening Bilateral", 1, "L", "A", 2],
            [1, 100, "2015-01-01", "MG Screening Bilateral", 2, "R", "N", 2],  # second finding, same density
            [2, 200, "2016-01-01", "MG Screening Bilateral", 1, "", "N", 5],  # normal male: outside the map
            [3, 300, "2017-01-01", "MG Screening Bilateral", 1, "", "N", 4],
        ],
    )
    header = [
        "empi_anon", "acc_anon", "anon_dicom_path", "FinalImageType", "ImageLateralityFinal", "ViewPosition",
        "spot_mag", "Manufacturer", "ManufacturerModelName",
    ]  # fmt: skip
    nas = "/mnt/NAS2/mammo/anon_dicom/cohort_1"
    rows = [
        [1, 100, f"{nas}/1/100/1.2.1.dcm", "2D", "L", "CC", "", "HOLOGIC, Inc.", "Selenia Dimensions"],
        [1, 100, f"{nas}/1/100/1.2.2.dcm", "2D", "R", "MLO", "", "HOLOGIC, Inc.", "Selenia Dimensions"],
        [1, 100, f"{nas}/1/100/1.2.3.dcm", "cview", "R", "MLO", "", "HOLOGIC, Inc.", "Selenia Dimensions"],
        [1, 100, f"{nas}/1/100/1.2.4.dcm", "2D", "R", "CC", 1, "HOLOGIC, Inc.", "Selenia Dimensions"],
        [2, 200, f"{nas}/2/200/2.2.1.dcm", "2D", "L", "CC", "", "GE MEDICAL SYSTEMS", "Senographe"],
        [3, 300, f"{nas}/3/300/3.2.1.dcm", "2D", "L", "MLO", "", "GE MEDICAL SYSTEMS", "Senographe"],
    ]
    write_csv(root / "tables" / "EMBED_OpenData_metadata.csv", header, rows)
    for row in rows:
        tail = Path(row[2]).relative_to("/mnt/NAS2/mammo/anon_dicom")
        write_dicom(root / tail, Path(row[2]).stem, str(row[0]))
    return {}


def eyeq(root: Path) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    header = ["", "image", "quality", "DR_grade"]
    write_csv(root / "Label_EyeQ_train.csv", header, [[0, "10_left.jpeg", 0, 0], [1, "10_right.jpeg", 2, 0]])
    write_csv(root / "Label_EyeQ_test.csv", header, [[0, "1_left.jpeg", 1, 0], [1, "1_right.jpeg", 3, 0]])
    for split, name in (("train", "10_left"), ("train", "10_right"), ("test", "1_left"), ("test", "1_right")):
        write_jpeg(root / split / f"{name}.jpeg", rng.integers(0, 255, size=(40, 40, 3)))
    return {}


def csv_mapping(root: Path) -> dict[str, Any]:
    rng = np.random.default_rng(2)
    rows = [
        ["img1", "p1", "north", 1, "left", "cc"],
        ["img2", "p1", "north", 4, "left", "mlo"],
        ["img3", "p2", "south", 2, "right", "cc"],
        ["img4", "p3", "south", 9, "right", "cc"],  # outside the value map
    ]
    write_csv(
        root / "export" / "labels.csv", ["image", "patient", "site", "birads_density", "side", "view"], rows
    )
    for row in rows:
        write_jpeg(root / "pics" / str(row[1]) / f"{row[0]}.jpg", rng.integers(0, 255, size=SHAPE))
    mapping = root / "export" / "map.yaml"
    mapping.write_text(
        "csv: labels.csv\n"
        "columns: {id: image, label: birads_density, domain: site, patient_id: patient, laterality: side, "
        "view: view}\n"
        'path_template: "pics/{patient}/{image}.jpg"\n'
        'labels: {"1": A, "2": B, "3": C, "4": D}\n'
    )
    return {"columns": mapping}


def dicom_folder(root: Path) -> dict[str, Any]:
    export = root / "export"
    write_dicom(export / "a" / "1.dcm", "k1", "P1", "L", "CC", "Siemens", "Mammomat Inspiration", "North")
    write_dicom(export / "a" / "2.dcm", "k2", "P1", "R", "CC", "Siemens", "Mammomat Inspiration", "North")
    write_dicom(export / "b" / "3.dcm", "k3", "P2", "L", "MLO", "GE", "Senographe", "South")
    write_dicom(export / "b" / "4.dcm", "k4", "P3", "L", "MLO", "GE", "Senographe", "South")  # no label row
    (export / "b" / "notes.txt").write_text("not a DICOM")
    write_csv(root / "labels.csv", ["file", "label"], [["a/1.dcm", "A"], ["a/2.dcm", "C"], ["b/3.dcm", "D"]])
    return {"csv": root / "labels.csv"}


#: format -> (builder, folder under the layout root given as --source)
LAYOUTS: dict[str, tuple[Callable[[Path], dict[str, Any]], str]] = {
    "rsna": (rsna, ""),
    "vindr": (vindr, ""),
    "vindr_dense_masks": (vindr_dense_masks, ""),
    "cbis_ddsm": (cbis_ddsm, ""),
    "embed": (embed, ""),
    "eyeq": (eyeq, ""),
    "csv": (csv_mapping, ""),
    "dicom_folder": (dicom_folder, "export"),
}

#: Formats that list the image files on disk rather than the rows of a table.
LISTS_FILES_ON_DISK = {"vindr_dense_masks", "dicom_folder"}


def build(fmt: str, root: Path) -> tuple[Path, dict[str, Any]]:
    """Write format ``fmt``'s fake layout under ``root``; return (--source, import_dataset options)."""
    builder, sub = LAYOUTS[fmt]
    options = builder(root)
    return root / sub if sub else root, options
