"""Synthetic fundus photographs: files, anatomy, quality grades and masks, camera domains, reproducibility."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter, laplace

from medseg_weak.data.manifest import QUALITY_LABELS, Record, load_manifest, write_manifest
from medseg_weak.data.synthetic import degradations, fundus
from medseg_weak.data.synthetic.fundus import DEGRADATIONS, camera_profile, generate_fundus
from medseg_weak.errors import ConfigError

SIZE = 112


def _rgb(root: Path, record: Record) -> np.ndarray:
    return np.asarray(Image.open(root / record.path))


def _mask(root: Path, record: Record) -> np.ndarray:
    return np.asarray(Image.open(root / record.mask_path))


def _fov(record: Record, margin: float = -3.0) -> np.ndarray:
    """The camera's field of view; eroded by default so that its rim counts neither as edge nor colour."""
    camera = camera_profile(int(record.domain[1:]) - 1)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] - (SIZE - 1) / 2
    radius = camera.fov_radius * SIZE + margin
    return (np.hypot(xx, yy) < radius) & (np.abs(yy) < camera.crop * radius)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Record]]:
    root = tmp_path_factory.mktemp("fundus")
    return root, generate_fundus(root, n_per_hospital=16, hospitals=3, seed=3, size=SIZE)


def test_files_and_records(dataset):
    root, records = dataset
    assert len(records) == 48
    assert len({r.id for r in records}) == 48
    assert {r.domain for r in records} == {"C1", "C2", "C3"}
    for r in records:
        image, mask = _rgb(root, r), _mask(root, r)
        assert image.dtype == np.uint8 and image.shape == (SIZE, SIZE, 3)
        assert mask.dtype == np.uint8 and mask.shape == (SIZE, SIZE)
        assert mask.max() < 2 ** len(DEGRADATIONS)
        assert r.label in QUALITY_LABELS and r.view == "" and r.split == ""
        assert r.path == f"images/{r.id}.png" and r.mask_path == f"masks/{r.id}.png"
    eyes: dict[str, list[str]] = {}
    for r in records:
        eyes.setdefault(r.patient_id, []).append(r.laterality)
    assert all(sorted(lat) == ["L", "R"] for lat in eyes.values())


def test_records_pass_manifest_validation(dataset, tmp_path):
    root, records = dataset
    manifest = load_manifest(write_manifest(records, root / "manifest.csv"), check_files=True)
    assert manifest.labels == QUALITY_LABELS
    assert len(manifest) == len(records)


def test_field_of_view_is_a_bright_disc_on_black(dataset):
    root, records = dataset
    for r in records:
        image = _rgb(root, r).astype(float)
        corners = [image[:6, :6], image[:6, -6:], image[-6:, :6], image[-6:, -6:]]
        assert max(c.mean() for c in corners) < 12, r.id
        if r.label == "Good":
            centre = image[SIZE // 2 - 10 : SIZE // 2 + 10, SIZE // 2 - 10 : SIZE // 2 + 10]
            assert centre.mean() > 50, r.id
            # an orange-red retina: red dominates green, green dominates blue
            red, green, blue = centre.reshape(-1, 3).mean(axis=0)
            assert red > green > blue * 0.9, r.id


def test_optic_disc_is_nasal_and_mirrored_between_eyes(dataset):
    root, records = dataset
    for r in records:
        if r.label != "Good":
            continue
        green = gaussian_filter(_rgb(root, r)[..., 1].astype(float), 2.0)  # the disc is the brightest blob
        x = np.unravel_index(np.argmax(green), green.shape)[1]
        assert (x > SIZE / 2) == (r.laterality == "R"), r.id


def test_all_grades_present(dataset):
    counts = Counter(r.label for r in dataset[1])
    assert set(counts) == set(QUALITY_LABELS), counts


def test_masks_only_where_degraded(dataset):
    root, records = dataset
    for r in records:
        mask = _mask(root, r)
        if r.label == "Good":
            assert (mask > 0).mean() < 0.02, r.id  # none, or a speck of dust
        else:
            assert (mask > 0).mean() > 0.005, r.id
        assert not mask[~_fov(r, margin=1.0)].any(), r.id  # never outside the field of view


def test_reject_is_more_degraded_and_less_sharp_than_good(dataset):
    root, records = dataset
    area: dict[str, list[float]] = {g: [] for g in QUALITY_LABELS}
    sharp: dict[str, list[float]] = {g: [] for g in QUALITY_LABELS}
    for r in records:
        image = _rgb(root, r)
        fov = _fov(r)
        area[r.label].append(float((_mask(root, r)[fov] > 0).mean()))
        sharp[r.label].append(float(laplace(image[..., 1].astype(float))[fov].var()))
    assert np.mean(area["Reject"]) > np.mean(area["Usable"]) > np.mean(area["Good"])
    assert np.mean(sharp["Reject"]) < np.mean(sharp["Good"])


def test_cameras_have_different_colour_casts(dataset):
    root, records = dataset
    ratios: dict[str, list[np.ndarray]] = {}
    for r in records:
        image = _rgb(root, r).astype(float)
        rgb = image[_fov(r)].mean(axis=0)
        ratios.setdefault(r.domain, []).append(np.array([rgb[0] / rgb[1], rgb[2] / rgb[1]]))
    medians = {d: np.median(v, axis=0) for d, v in ratios.items()}
    names = sorted(medians)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert np.abs(medians[a] - medians[b]).max() > 0.08, (a, b, medians)


def test_same_arguments_give_identical_files(tmp_path):
    a = generate_fundus(tmp_path / "a", n_per_hospital=3, hospitals=2, seed=7, size=96)
    b = generate_fundus(tmp_path / "b", n_per_hospital=3, hospitals=2, seed=7, size=96)
    assert a == b
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    generate_fundus(tmp_path / "c", n_per_hospital=3, hospitals=2, seed=8, size=96)
    assert _files(tmp_path / "a") != _files(tmp_path / "c")


def test_odd_count_gives_last_patient_one_eye(tmp_path):
    records = generate_fundus(tmp_path, n_per_hospital=3, hospitals=1, size=96)
    assert [(r.patient_id, r.laterality) for r in records] == [
        ("C1_P0000", "R"),
        ("C1_P0000", "L"),
        ("C1_P0001", "R"),
    ]


def test_resume_keeps_files_and_recovers_labels(tmp_path, monkeypatch):
    first = generate_fundus(tmp_path, n_per_hospital=4, hospitals=2, seed=1, size=96)
    before = _files(tmp_path)
    removed = tmp_path / first[1].path
    removed.unlink()
    kept = tmp_path / first[0].path
    kept_mtime = kept.stat().st_mtime_ns
    calls: list[int] = []
    assert (
        generate_fundus(tmp_path, n_per_hospital=4, hospitals=2, seed=1, size=96, progress=calls.append)
        == first
    )
    assert _files(tmp_path) == before  # the missing image was redrawn byte for byte
    assert kept.stat().st_mtime_ns == kept_mtime
    assert calls == [1] * len(first)

    def no_pixels(*args, **kwargs):
        raise AssertionError("a complete pair was rendered again")

    monkeypatch.setattr(fundus, "_render_eye", no_pixels)
    assert generate_fundus(tmp_path, n_per_hospital=4, hospitals=2, seed=1, size=96) == first


def test_workers_give_identical_output(tmp_path):
    one = generate_fundus(tmp_path / "one", n_per_hospital=4, hospitals=2, seed=2, size=96, workers=1)
    calls: list[int] = []
    two = generate_fundus(
        tmp_path / "two", n_per_hospital=4, hospitals=2, seed=2, size=96, workers=2, progress=calls.append
    )
    assert one == two
    assert _files(tmp_path / "one") == _files(tmp_path / "two")
    assert sum(calls) == len(one)


def test_every_degradation_has_an_implementation():
    assert set(degradations.DEGRADE) == set(DEGRADATIONS)
    assert sorted(degradations.APPLY_ORDER) == sorted(DEGRADATIONS)


def test_camera_profiles_beyond_the_built_in_ones_are_stable():
    assert [camera_profile(i).name for i in range(6)] == ["C1", "C2", "C3", "C4", "C5", "C6"]
    assert camera_profile(5) == camera_profile(5)
    for i in range(8):
        assert sum(camera_profile(i).class_mix) == pytest.approx(1.0)
    with pytest.raises(ConfigError):
        camera_profile(-1)


@pytest.mark.parametrize(
    "kwargs",
    [{"n_per_hospital": -1}, {"hospitals": 0}, {"size": 32}, {"workers": 0}],
)
def test_bad_arguments_raise_config_error(tmp_path, kwargs):
    args = {"n_per_hospital": 2} | kwargs
    with pytest.raises(ConfigError):
        generate_fundus(tmp_path, **args)
