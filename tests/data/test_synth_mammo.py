"""The synthetic multi-hospital mammography benchmark: files, tags, truth, determinism, resume, cue."""

from __future__ import annotations

import shutil
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image as PILImage
from pydicom.uid import UID, RLELossless

from medseg_weak.data.synthetic.dicom_writer import MAMMO_FOR_PRESENTATION
from medseg_weak.data.synthetic.mammo import (
    BASE_PROFILES,
    VIEWS,
    draw_anatomy,
    draw_mammogram,
    generate_mammo,
    hospital_profile,
    image_shape,
    mammo_truths,
    read_mask_truth,
)
from medseg_weak.data.synthetic.mammo import (
    density_label as label_of,
)
from medseg_weak.errors import ConfigError, InputError

HEIGHT = 128
N_PER_HOSPITAL = 12  # three patients per hospital
SEED = 3
ARGS = {"hospitals": 4, "seed": SEED, "spurious_cue": 1.0, "height": HEIGHT}


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list, list[int]]:
    out = tmp_path_factory.mktemp("mammo")
    calls: list[int] = []
    records = generate_mammo(out, N_PER_HOSPITAL, progress=calls.append, **ARGS)
    return out, records, calls


def _files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _mask(out: Path, record) -> np.ndarray:
    return np.asarray(PILImage.open(out / record.mask_path))


def _display(ds: pydicom.Dataset) -> np.ndarray:
    """Pixels in modality units with bright = dense (MONOCHROME1 undone)."""
    values = ds.pixel_array.astype(np.float64)
    values = float(ds.get("RescaleSlope", 1.0)) * values + float(ds.get("RescaleIntercept", 0.0))
    if ds.PhotometricInterpretation == "MONOCHROME1":
        values = values.max() + values.min() - values
    return values


# ------------------------------------------------------------------------------------------------
# Records and files


def test_records_patients_and_progress(bench) -> None:
    out, records, calls = bench
    assert len(records) == 4 * N_PER_HOSPITAL
    assert calls == [1] * len(records)
    assert len({r.id for r in records}) == len(records)
    assert Counter(r.domain for r in records) == {f"H{i}": N_PER_HOSPITAL for i in range(1, 5)}
    by_patient = defaultdict(set)
    for r in records:
        assert r.path == f"images/{r.id}.dcm" and r.mask_path == f"masks/{r.id}.png"
        assert (out / r.path).is_file() and (out / r.mask_path).is_file()
        assert r.split == "" and r.label in "ABCD"
        by_patient[r.patient_id].add((r.laterality, r.view))
    assert all(views == set(VIEWS) for views in by_patient.values())


def test_last_patient_may_have_fewer_images(tmp_path: Path) -> None:
    records = generate_mammo(tmp_path, 6, hospitals=1, height=64)
    assert [r.patient_id for r in records] == ["H1_P0000"] * 4 + ["H1_P0001"] * 2
    assert [(r.laterality, r.view) for r in records[4:]] == list(VIEWS[:2])


def test_dicom_tags_and_geometry(bench) -> None:
    out, records, _ = bench
    study_of: dict[str, str] = {}
    sops = set()
    for r in records:
        ds = pydicom.dcmread(out / r.path)
        assert ds.Modality == "MG" and ds.SOPClassUID == MAMMO_FOR_PRESENTATION
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert all(UID(u).is_valid for u in (ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID))
        assert ds.ImageLaterality == ds.Laterality == r.laterality
        assert ds.ViewPosition == r.view and ds.PatientID == r.patient_id
        assert (ds.BitsAllocated, ds.PixelRepresentation, ds.SamplesPerPixel) == (16, 0, 1)
        assert ds.HighBit == ds.BitsStored - 1 and ds.BitsStored in (12, 14, 16)
        assert len(ds.PixelSpacing) == 2 and ds.Manufacturer
        pixels = ds.pixel_array
        assert pixels.dtype == np.uint16 and int(pixels.max()) < 2**ds.BitsStored
        assert pixels.shape == _mask(out, r).shape == (ds.Rows, ds.Columns)
        assert study_of.setdefault(r.patient_id, ds.StudyInstanceUID) == ds.StudyInstanceUID
        sops.add(ds.SOPInstanceUID)
    assert len(sops) == len(records) and len(set(study_of.values())) == len(study_of)


def test_vendor_formats_differ(bench) -> None:
    out, records, _ = bench
    first = {r.domain: pydicom.dcmread(out / r.path) for r in reversed(records)}
    assert [first[h].PhotometricInterpretation for h in ("H1", "H2", "H3", "H4")] == [
        "MONOCHROME2", "MONOCHROME1", "MONOCHROME2", "MONOCHROME2",
    ]  # fmt: skip
    assert first["H3"].file_meta.TransferSyntaxUID == RLELossless
    assert "WindowCenter" in first["H1"] and "WindowWidth" in first["H1"]
    assert "RescaleSlope" in first["H3"] and "RescaleIntercept" in first["H3"]
    assert {ds.BitsStored for ds in first.values()} == {12, 14, 16}
    assert len({(ds.Rows, ds.Columns) for ds in first.values()}) == 4
    assert len({ds.Manufacturer for ds in first.values()}) == 4


def test_masks_binary_and_labels_follow_the_mask_fraction(bench) -> None:
    out, records, _ = bench
    truths = mammo_truths(out, records)
    for r in records:
        mask = _mask(out, r)
        assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
        truth = truths[r.id]
        assert truth.dense_pixels == int((mask == 255).sum()) > 0
        assert r.label == label_of(truth.dense_fraction)


@pytest.mark.parametrize(
    ("fraction", "label"), [(0.0, "A"), (0.2499, "A"), (0.25, "B"), (0.5, "C"), (0.7499, "C"), (0.75, "D")]
)
def test_density_label_thresholds(fraction: float, label: str) -> None:
    assert label_of(fraction) == label


def test_orientation_chest_wall_on_the_laterality_side(bench) -> None:
    out, records, _ = bench
    for r in records:
        values = _display(pydicom.dcmread(out / r.path))
        middle = values[values.shape[0] // 4 : 3 * values.shape[0] // 4]
        left, right = middle[:, :3].mean(), middle[:, -3:].mean()
        assert (left > right) == (r.laterality == "L"), r.id


# ------------------------------------------------------------------------------------------------
# Determinism, resume, workers


def test_same_arguments_give_identical_bytes(bench, tmp_path: Path) -> None:
    out, records, _ = bench
    again = generate_mammo(tmp_path, N_PER_HOSPITAL, **ARGS)
    assert again == records
    assert _files(tmp_path) == _files(out)


def test_resume_after_deleted_or_damaged_files(bench, tmp_path: Path) -> None:
    out, records, _ = bench
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / records[0].path).unlink()
    (copy / records[5].mask_path).unlink()
    (copy / records[9].mask_path).write_bytes(b"not a png")
    (copy / records[20].path).unlink()
    (copy / records[20].mask_path).unlink()
    calls: list[int] = []
    again = generate_mammo(copy, N_PER_HOSPITAL, progress=calls.append, **ARGS)
    assert again == records and len(calls) == len(records)
    assert _files(copy) == _files(out)


def test_other_settings_in_the_same_folder_redraw(bench, tmp_path: Path) -> None:
    out, _, _ = bench
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    generate_mammo(copy, N_PER_HOSPITAL, **{**ARGS, "spurious_cue": 0.0})
    fresh = tmp_path / "fresh"
    generate_mammo(fresh, N_PER_HOSPITAL, **{**ARGS, "spurious_cue": 0.0})
    assert _files(copy) == _files(fresh)


def test_workers_give_identical_output(bench, tmp_path: Path) -> None:
    out, records, _ = bench
    calls: list[int] = []
    parallel = generate_mammo(tmp_path, N_PER_HOSPITAL, workers=2, progress=calls.append, **ARGS)
    assert parallel == records and len(calls) == len(records)
    assert _files(tmp_path) == _files(out)


# ------------------------------------------------------------------------------------------------
# Population, intensities, spurious cue


def test_label_mix_differs_between_hospitals_and_covers_every_class(tmp_path: Path) -> None:
    records = generate_mammo(tmp_path, 40, hospitals=4, seed=0, height=64)
    mix = {h: Counter(r.label for r in records if r.domain == h) for h in ("H1", "H2", "H3", "H4")}
    assert {label for counts in mix.values() for label in counts} == set("ABCD")
    dense_share = [(counts["C"] + counts["D"]) / 40 for counts in mix.values()]
    assert max(dense_share) - min(dense_share) >= 0.2, mix


@pytest.mark.parametrize("hospital", range(6))
@pytest.mark.parametrize("view", ["CC", "MLO"])
def test_dense_tissue_brighter_than_fat_for_every_vendor(hospital: int, view: str) -> None:
    profile = hospital_profile(hospital)
    image = draw_mammogram(np.random.default_rng(hospital), profile, "R", view, 0.4, False, HEIGHT)
    values = image.pixels.astype(np.float64)
    if profile.monochrome1:
        values = 2**profile.bits_stored - 1 - values
    dense, fat = values[image.dense].mean(), values[image.tissue & ~image.dense].mean()
    assert dense - fat > 0.1 * values[image.tissue].max()


def test_target_fraction_is_hit_and_pectoral_is_excluded() -> None:
    anatomy = draw_anatomy(np.random.default_rng(0), (160, 128), "MLO", 0.3)
    assert anatomy.pectoral.any()
    assert not (anatomy.dense & anatomy.pectoral).any()
    assert not (anatomy.tissue & anatomy.pectoral).any()
    assert abs(anatomy.dense_fraction - 0.3) < 0.01


def test_cue_predicts_density_in_opposite_directions(bench) -> None:
    out, records, _ = bench
    truths = mammo_truths(out, records)
    for hospital, sign in (("H1", 1), ("H2", -1), ("H3", 1), ("H4", -1)):
        mine = [r for r in records if r.domain == hospital]
        dense = [truths[r.id].cue for r in mine if r.label in "CD"]
        fatty = [truths[r.id].cue for r in mine if r.label in "AB"]
        assert dense and fatty, f"{hospital} needs both dense and fatty images for this test"
        assert np.mean(dense) - np.mean(fatty) == sign  # strength 1: the cue is fully predictive


def test_cue_only_adds_a_marker_inside_the_breast(bench, tmp_path: Path) -> None:
    out, records, _ = bench
    truths = mammo_truths(out, records)
    plain = generate_mammo(tmp_path, N_PER_HOSPITAL, **{**ARGS, "hospitals": 2, "spurious_cue": 0.0})
    assert [r.label for r in plain] == [r.label for r in records[: len(plain)]]
    assert not any(t.cue for t in mammo_truths(tmp_path, plain).values())
    for r in plain:
        np.testing.assert_array_equal(_mask(tmp_path, r), _mask(out, r))
        without = pydicom.dcmread(tmp_path / r.path)
        differs = without.pixel_array != pydicom.dcmread(out / r.path).pixel_array
        assert differs.any() == truths[r.id].cue
        assert differs.mean() < 0.02
        # the marker lies inside the breast (not on the black background), where preprocessing keeps it
        values = _display(without)
        assert (values[differs] > values.min() + 0.05 * np.ptp(values)).all()


def test_spurious_cue_zero_draws_no_cue(tmp_path: Path) -> None:
    records = generate_mammo(tmp_path, 4, hospitals=2, height=64)
    assert not any(t.cue for t in mammo_truths(tmp_path, records).values())


# ------------------------------------------------------------------------------------------------
# Profiles, arguments, helpers


def test_profiles_cycle_with_variations() -> None:
    for index in range(len(BASE_PROFILES), 2 * len(BASE_PROFILES)):
        base, variant = BASE_PROFILES[index % len(BASE_PROFILES)], hospital_profile(index)
        assert variant != base
        assert (variant.manufacturer, variant.monochrome1, variant.rle) == (
            base.manufacturer, base.monochrome1, base.rle,
        )  # fmt: skip
        rows, cols = image_shape(variant, 512)
        assert 0.85 * 512 <= rows <= 1.2 * 512 and rows % 2 == 0 and cols % 2 == 0


@pytest.mark.parametrize(
    "kwargs",
    [{"n_per_hospital": 0}, {"hospitals": 0}, {"spurious_cue": 1.5}, {"height": 16}, {"workers": 0}],
)
def test_bad_arguments_raise_config_error(tmp_path: Path, kwargs: dict) -> None:
    args = {"n_per_hospital": 4, **kwargs}
    with pytest.raises(ConfigError):
        generate_mammo(tmp_path, **args)


def test_read_mask_truth_rejects_a_plain_png(tmp_path: Path) -> None:
    path = tmp_path / "plain.png"
    PILImage.fromarray(np.zeros((8, 8), np.uint8)).save(path)
    with pytest.raises(InputError, match="not a synthetic"):
        read_mask_truth(path)
