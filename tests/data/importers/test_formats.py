"""Each format on its fake layout, checked row for row, awkward cases included."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image as PILImage

from medseg_weak.data.importers import import_dataset
from medseg_weak.data.manifest import load_manifest
from tests.data.importers import fakes


def rows(result):
    """(id, label, domain, patient_id, laterality, view, split, path tail) per manifest row."""
    manifest = load_manifest(result.manifest, labels=result.labels)
    return [
        (
            r.id,
            r.label,
            r.domain,
            r.patient_id,
            r.laterality,
            r.view,
            r.split,
            "/".join(r.path.split("/")[-2:]),
        )
        for r in manifest
    ]


def run(fmt, tmp_path, **extra):
    source, options = fakes.build(fmt, tmp_path / "layout")
    return import_dataset(fmt, source, tmp_path / "out", **{**options, **extra})


def test_rsna_drops_rows_without_density_and_names_sites(tmp_path):
    result = run("rsna", tmp_path)
    assert rows(result) == [
        ("462822612", "B", "site_1", "10006", "L", "CC", "", "10006/462822612.dcm"),
        ("1459541791", "B", "site_1", "10006", "L", "MLO", "", "10006/1459541791.dcm"),
        ("270344397", "D", "site_2", "10011", "R", "MLO", "", "10011/270344397.dcm"),
    ]
    assert result.rows_read == 4 and result.dropped == {"no density": 1}
    report = result.report.read_text()
    assert "| no density | 1 | line 4 (image 220375232) |" in report
    assert "BIRADS" in report  # columns the manifest has no place for are listed, not silently lost


def test_rsna_domain_by_machine(tmp_path):
    result = run("rsna", tmp_path, domain_by="machine_id")
    assert [r[2] for r in rows(result)] == ["machine_29", "machine_29", "machine_21"]


def test_vindr_density_strings_official_split_and_scanner_domain(tmp_path):
    result = run("vindr", tmp_path)
    assert rows(result) == [
        ("i1", "A", "Mammomat Inspiration", "s1", "L", "CC", "train", "s1/i1.dicom"),
        (
            "i2",
            "C",
            "Mammomat Inspiration",
            "s1",
            "R",
            "MLO",
            "train",
            "s1/i2.dicom",
        ),  # model from its header
        ("i3", "D", "Planmed Nuance", "s2", "L", "CC", "test", "s2/i3.dicom"),
    ]
    assert result.dropped == {
        "breast_density outside the map (DENSITY A, DENSITY B, DENSITY C, DENSITY D)": 1
    }
    report = result.report.read_text()
    assert "'DENSITY E'" in report
    assert "2 from metadata.csv, 1 from DICOM headers" in report


def test_vindr_dense_masks_become_binary_pngs_of_the_image_size(tmp_path):
    result = run("vindr_dense_masks", tmp_path)
    manifest = load_manifest(result.manifest, labels=result.labels)
    # 12.5 %, 60 %, 80 % dense: BI-RADS 4th-edition quartiles A, C, D
    assert [(r.id, r.label, r.mask_path) for r in manifest] == [
        ("a1", "A", "masks/a1.png"),
        ("a2", "C", "masks/a2.png"),
        ("a3", "D", ""),
    ]
    assert result.warnings == {"no dense mask (image kept without a mask)": 1}
    jpeg = np.asarray(PILImage.open(tmp_path / "layout" / "dense_masks" / "a1.jpg"))
    assert len(np.unique(jpeg)) > 2  # the JPEG really has compression grey levels
    png = np.asarray(PILImage.open(result.manifest.parent / "masks" / "a1.png"))
    assert png.shape == fakes.SHAPE and set(np.unique(png)) == {0, 255}
    drawn = fakes.disc_mask() > 0
    assert np.mean((png > 0) == drawn) > 0.99  # the drawing comes back, not the ringing


def test_vindr_dense_masks_fraction_table_is_flagged(tmp_path):
    source, _ = fakes.build("vindr_dense_masks", tmp_path / "layout")
    fakes.write_csv(source / "train.csv", ["Filename", "Density"], [["a1.jpg", 0.1], ["a2.jpg", 0.6]])
    result = import_dataset("vindr_dense_masks", source, tmp_path / "out")
    assert "**every Density value is <= 1**" in result.report.read_text()


def test_vindr_dense_masks_with_vindr_annotations(tmp_path):
    source, _ = fakes.build("vindr_dense_masks", tmp_path / "layout")
    fakes.write_csv(
        source / "breast-level_annotations.csv",
        fakes.VINDR_HEADER,
        [
            ["s1", "r1", "a1", "L", "CC", 64, 48, "BI-RADS 1", "DENSITY B", "training"],
            ["s1", "r2", "a2", "R", "MLO", 64, 48, "BI-RADS 1", "DENSITY D", "training"],
        ],
    )
    fakes.write_csv(
        source / "metadata.csv", ["SOP Instance UID", "Manufacturer's Model Name"], [["a1", "M1"]]
    )
    result = import_dataset("vindr_dense_masks", source, tmp_path / "out")  # the VinDr CSV is preferred
    assert rows(result) == [
        ("a1", "B", "M1", "s1", "L", "CC", "", "images/a1.jpg"),
        ("a2", "D", "unknown", "s1", "R", "MLO", "", "images/a2.jpg"),
    ]
    assert result.dropped == {"no row in breast-level_annotations.csv": 1}


def test_cbis_ddsm_spellings_lesion_rows_and_patient_in_both_splits(tmp_path):
    result = run("cbis_ddsm", tmp_path)
    assert [r[:7] for r in rows(result)] == [
        ("Calc-Test_P_00004_LEFT_CC", "A", "CBIS-DDSM", "P_00004", "L", "CC", "test"),  # 'breast density'
        (
            "Mass-Training_P_00001_LEFT_CC",
            "C",
            "CBIS-DDSM",
            "P_00001",
            "L",
            "CC",
            "train",
        ),  # 'breast_density'
        ("Mass-Training_P_00004_RIGHT_MLO", "A", "CBIS-DDSM", "P_00004", "R", "MLO", "test"),
    ]
    assert result.rows_read == 5
    assert result.dropped == {"breast density outside the map (1, 2, 3, 4)": 1}
    assert result.warnings == {
        "same image on several rows (kept once)": 1,
        "patient also in an official test set: moved to test": 1,
    }


def test_embed_joins_exam_density_and_keeps_2d_full_field_only(tmp_path):
    result = run("embed", tmp_path)
    assert rows(result) == [
        ("1.2.1", "B", "HOLOGIC, Inc.", "1", "L", "CC", "", "100/1.2.1.dcm"),
        ("1.2.2", "B", "HOLOGIC, Inc.", "1", "R", "MLO", "", "100/1.2.2.dcm"),
        ("3.2.1", "D", "GE MEDICAL SYSTEMS", "3", "L", "MLO", "", "300/3.2.1.dcm"),
    ]
    assert result.dropped == {
        "not a 2D image (FinalImageType)": 1,
        "spot compression or magnification view": 1,
        "tissueden outside the map (1, 2, 3, 4)": 1,
    }


def test_embed_domain_by_any_metadata_column(tmp_path):
    result = run("embed", tmp_path, domain_by="ManufacturerModelName")
    assert {r[2] for r in rows(result)} == {"Selenia Dimensions", "Senographe"}


def test_embed_exam_whose_rows_disagree_is_dropped(tmp_path):
    source, _ = fakes.build("embed", tmp_path / "layout")
    clinical = source / "tables" / "EMBED_OpenData_clinical.csv"
    clinical.write_text(
        clinical.read_text().replace("MG Screening Bilateral,2,R,N,2", "MG Screening Bilateral,2,R,N,3")
    )
    result = import_dataset("embed", source, tmp_path / "out")
    assert [r[0] for r in rows(result)] == ["3.2.1"]
    assert result.dropped["the exam's rows disagree on tissueden"] == 2


def test_eyeq_quality_grades_split_patient_and_side(tmp_path):
    result = run("eyeq", tmp_path)
    assert rows(result) == [
        ("1_left", "Usable", "EyePACS", "1", "L", "", "test", "test/1_left.jpeg"),
        ("10_left", "Good", "EyePACS", "10", "L", "", "train", "train/10_left.jpeg"),
        ("10_right", "Reject", "EyePACS", "10", "R", "", "train", "train/10_right.jpeg"),
    ]
    assert result.labels == ("Good", "Usable", "Reject")
    assert result.dropped == {"quality outside the map (0, 1, 2)": 1}


def test_csv_mapping_template_value_map_and_side_spellings(tmp_path):
    result = run("csv", tmp_path)
    assert rows(result) == [
        ("img1", "A", "north", "p1", "L", "CC", "", "p1/img1.jpg"),
        ("img2", "D", "north", "p1", "L", "MLO", "", "p1/img2.jpg"),
        ("img3", "B", "south", "p2", "R", "CC", "", "p2/img3.jpg"),
    ]
    assert "'9'" in result.report.read_text()


def test_csv_mapping_constant_domain_and_own_labels(tmp_path):
    fakes.write_csv(
        tmp_path / "t.csv", ["name", "who", "y"], [["x1", "a", "benign"], ["x2", "b", "malignant"]]
    )
    for name in ("x1", "x2"):
        fakes.write_jpeg(tmp_path / f"{name}.jpg", np.zeros(fakes.SHAPE))
    mapping = tmp_path / "m.yaml"
    mapping.write_text(
        "columns: {id: name, label: y, patient_id: who}\n"
        'path_template: "{name}.jpg"\nconstants: {domain: clinic}\n'
    )
    result = import_dataset("csv", tmp_path, tmp_path / "out", csv=tmp_path / "t.csv", columns=mapping)
    assert [r[:4] for r in rows(result)] == [
        ("x1", "benign", "clinic", "a"),
        ("x2", "malignant", "clinic", "b"),
    ]
    assert result.labels == ("benign", "malignant")


def test_dicom_folder_reads_tags_and_joins_labels(tmp_path):
    result = run("dicom_folder", tmp_path)
    got = [r[1:] for r in rows(result)]
    assert got == [
        ("A", "Siemens Mammomat Inspiration", "P1", "L", "CC", "", "a/1.dcm"),
        ("C", "Siemens Mammomat Inspiration", "P1", "R", "CC", "", "a/2.dcm"),
        ("D", "GE Senographe", "P2", "L", "MLO", "", "b/3.dcm"),
    ]
    assert result.rows_read == 5
    assert result.dropped == {"no label row in the CSV": 1, "not a readable DICOM file": 1}
    assert "Doe" not in result.manifest.read_text() + result.report.read_text()  # no patient names


def test_dicom_folder_domain_by_institution_and_join_per_breast(tmp_path):
    source, _ = fakes.build("dicom_folder", tmp_path / "layout")
    from pydicom import dcmread

    uid = dcmread(source / "a" / "1.dcm").SOPInstanceUID
    fakes.write_csv(
        tmp_path / "by_uid.csv",
        ["SOPInstanceUID", "laterality", "density"],
        [[uid, "L", "2"], [uid, "R", "4"]],
    )
    mapping = tmp_path / "m.yaml"
    mapping.write_text('columns: {label: density}\nlabels: {"1": A, "2": B, "3": C, "4": D}\n')
    result = import_dataset(
        "dicom_folder",
        source,
        tmp_path / "out",
        csv=tmp_path / "by_uid.csv",
        columns=mapping,
        domain_by="institution",
    )
    assert [(r[1], r[2], r[4]) for r in rows(result)] == [
        ("B", "North", "L")
    ]  # the (uid, R) row has no image


@pytest.mark.parametrize("workers", [1, 3])
def test_dicom_folder_workers_do_not_change_the_manifest(tmp_path, workers):
    result = run("dicom_folder", tmp_path, workers=workers)
    assert len(rows(result)) == 3


def test_header_thread_pool_gives_the_serial_answer(tmp_path):
    from medseg_weak.data.importers.dicom_headers import read_headers

    source, _ = fakes.build("dicom_folder", tmp_path / "layout")
    files = sorted(p for p in source.rglob("*") if p.is_file())
    serial = read_headers(files, workers=1)
    pooled = read_headers(files, workers=2)
    assert [(h.path, h.values, h.error) for h in pooled] == [(h.path, h.values, h.error) for h in serial]
    assert sum(1 for h in serial if h.error) == 1  # notes.txt
