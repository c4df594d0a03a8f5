"""Cue modes of the mammography benchmark: one shared marker, per-hospital signs, their errors."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from medseg_weak.cli import main
from medseg_weak.config import SynthConfig
from medseg_weak.data.synthetic import generate
from medseg_weak.data.synthetic.cue import (
    SHARED_MARKER,
    cue_pixels,
    cue_probability,
    default_cue_signs,
    hospital_marker,
    resolve_cue_signs,
    resolve_cue_strengths,
)
from medseg_weak.data.synthetic.mammo import draw_anatomy, generate_mammo, hospital_profile, mammo_truths
from medseg_weak.data.synthetic.render import render
from medseg_weak.errors import ConfigError

HOSPITALS = 5  # the fifth is a variant of H1's vendor, with its own (mirrored) marker place
TINY = {"hospitals": 4, "seed": 7, "spurious_cue": 1.0, "height": 64}


def _files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def rng() -> np.random.Generator:
    return np.random.default_rng(3)


@pytest.fixture(scope="module")
def anatomy():
    return draw_anatomy(np.random.default_rng(0), (96, 76), "MLO", 0.4)


def test_shared_mode_draws_the_same_marker_pixels_in_every_hospital(anatomy) -> None:
    def pixels(hospital: int, mode: str) -> np.ndarray:
        marker = hospital_marker(hospital, mode)
        return cue_pixels(anatomy.base.shape, anatomy, marker, np.random.default_rng(1))

    shared = [pixels(h, "shared") for h in range(HOSPITALS)]
    assert shared[0].sum() > 10
    assert all(np.array_equal(shared[0], other) for other in shared[1:])
    own = [pixels(h, "per_hospital") for h in range(HOSPITALS)]
    assert all(not np.array_equal(own[a], own[b]) for a in range(HOSPITALS) for b in range(a))


def test_every_vendor_renders_the_shared_marker_at_the_same_place(anatomy) -> None:
    """End to end through each vendor's blur, curve, noise and bit depth: only the marker changes."""
    cue_rng = rng().spawn(2)[0]  # the stream render() draws the marker's jitter from
    marker_rows, marker_cols = np.nonzero(cue_pixels(anatomy.base.shape, anatomy, SHARED_MARKER, cue_rng))
    for hospital in range(HOSPITALS):
        profile = hospital_profile(hospital)
        with_cue, without = (
            render(anatomy, profile, rng(), "L", "CC", cue, SHARED_MARKER).astype(np.int64)
            for cue in (True, False)
        )
        rows, cols = np.nonzero(with_cue != without)
        assert abs(rows.mean() - marker_rows.mean()) < 0.75 and abs(cols.mean() - marker_cols.mean()) < 0.75


def test_default_signs() -> None:
    assert default_cue_signs(4, "per_hospital") == (1, -1, 1, -1)  # the behaviour before the modes
    assert default_cue_signs(3, "per_hospital") == (1, -1, 1)
    assert default_cue_signs(4, "shared") == (1, -1, 1, -1)
    assert default_cue_signs(3, "shared") == (1, 1, -1)
    assert default_cue_signs(5, "shared") == (1, -1, 1, 1, -1)
    for n in range(2, 9):  # the last hospital, held out, is opposite to a strict training majority
        signs = default_cue_signs(n, "shared")
        assert signs[-1] == -1 and sum(signs[:-1]) > 0


def test_cue_sign_overrides_the_defaults() -> None:
    assert resolve_cue_signs({"H1": -1, "H2": 1, "H3": -1, "H4": 1}, 4, "shared") == (-1, 1, -1, 1)
    assert resolve_cue_signs({"H3": -1}, 4, "per_hospital") == (1, -1, -1, -1)


def test_cue_probability_known_values() -> None:
    assert cue_probability(1, "D", 0.6) == pytest.approx(0.8)
    assert cue_probability(1, "A", 0.6) == pytest.approx(0.2)
    assert cue_probability(-1, "C", 0.6) == pytest.approx(0.2)
    assert cue_probability(-1, "B", 0.6) == pytest.approx(0.8)
    assert cue_probability(-1, "B", 0.0) == 0.5


@pytest.mark.parametrize(
    ("cue_sign", "message"),
    [
        ({"H5": 1}, "'synth.cue_sign.H5' names no hospital: the hospitals are H1..H4"),
        ({"X": 1}, "'synth.cue_sign.X' names no hospital"),
        ({"H2": 0}, "'synth.cue_sign.H2' must be -1 or +1; got 0"),
        ({"H2": 2}, "'synth.cue_sign.H2' must be -1 or +1; got 2"),
        ({"H2": True}, "'synth.cue_sign.H2' must be -1 or +1; got True"),
    ],
)
def test_a_bad_cue_sign_fails_before_anything_is_written(
    tmp_path: Path, cue_sign: dict, message: str
) -> None:
    cfg = SynthConfig(n_per_hospital=4, height=64, spurious_cue=1.0, cue_mode="shared", cue_sign=cue_sign)
    with pytest.raises(
        ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("+", r"\+")
    ):
        generate(tmp_path / "out", cfg)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("cue_strength", "message"),
    [
        ({"H7": 0.5}, "'synth.cue_strength.H7' names no hospital: the hospitals are H1..H4"),
        ({"H2": 1.5}, "'synth.cue_strength.H2' must be a number in [0, 1]; got 1.5"),
        ({"H2": -0.1}, "'synth.cue_strength.H2' must be a number in [0, 1]; got -0.1"),
        ({"H2": "high"}, "'synth.cue_strength.H2' must be a number in [0, 1]; got 'high'"),
    ],
)
def test_a_bad_cue_strength_fails_before_anything_is_written(
    tmp_path: Path, cue_strength: dict, message: str
) -> None:
    cfg = SynthConfig(
        n_per_hospital=4, height=64, spurious_cue=1.0, cue_mode="shared", cue_strength=cue_strength
    )
    with pytest.raises(ConfigError, match=re.escape(message)):
        generate(tmp_path / "out", cfg)
    assert not (tmp_path / "out").exists()


def test_a_bad_cue_mode_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape("'synth.cue_mode' must be one of per_hospital, shared")):
        generate_mammo(tmp_path / "out", 4, height=64, cue_mode="everywhere")
    assert not (tmp_path / "out").exists()


def test_cli_flags_and_cue_sign_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    args = ["synth", "mammo", "--out", str(out), "--n-per-hospital", "4", "--height", "64", "-q"]
    assert main([*args, "--cue-mode", "shared", "--set", "synth.cue_sign.H9=1"]) == 3
    assert "'synth.cue_sign.H9' names no hospital" in capsys.readouterr().err
    assert not out.exists()
    assert main([*args, "--cue-mode", "shared", "--set", "synth.cue_strength.H2=2"]) == 3
    assert "'synth.cue_strength.H2' must be a number in [0, 1]; got 2" in capsys.readouterr().err
    assert not out.exists()
    assert main([*args, "--label-noise", "1.5"]) == 3
    assert "'synth.label_noise' must be in [0, 1]; got 1.5" in capsys.readouterr().err
    assert not out.exists()


def test_generated_cue_follows_each_hospitals_sign(tmp_path: Path) -> None:
    """At strength 1 the cue is on exactly the dense images (sign +1) or exactly the fatty ones (-1)."""
    signs = {"H1": -1, "H2": 1, "H3": -1, "H4": 1}
    records = generate_mammo(tmp_path, 16, cue_mode="shared", cue_sign=signs, **TINY)
    truths = mammo_truths(tmp_path, records)
    for hospital, sign in signs.items():
        pairs = [(r.label in ("C", "D"), truths[r.id].cue) for r in records if r.domain == hospital]
        assert {dense for dense, _ in pairs} == {True, False}  # both kinds present, so the check bites
        assert all(cue == (dense if sign > 0 else not dense) for dense, cue in pairs)


def test_cue_strength_sets_each_hospitals_correlation(tmp_path: Path) -> None:
    """A per-hospital strength: 0 draws no marker there, 1 puts it on exactly one kind, the hospitals
    not named keep spurious_cue; an image's resume key carries its own hospital's strength."""
    records = generate_mammo(
        tmp_path, 16, cue_mode="shared", cue_strength={"H2": 0.0, "H3": 1.0}, **{**TINY, "spurious_cue": 0.0}
    )
    truths = mammo_truths(tmp_path, records)
    cues = {h: [truths[r.id].cue for r in records if r.domain == h] for h in ("H1", "H2", "H3", "H4")}
    assert not any(cues["H1"] + cues["H2"] + cues["H4"])
    h3 = [(r.label in ("C", "D"), truths[r.id].cue) for r in records if r.domain == "H3"]
    assert {dense for dense, _ in h3} == {True, False} and all(cue == dense for dense, cue in h3)
    assert {truths[r.id].params for r in records if r.domain == "H3"} == {
        "seed=7;height=64;spurious_cue=1.0;cue_mode=shared"
    }
    assert resolve_cue_strengths({"H3": 0.25}, 4, 0.9) == (0.9, 0.9, 0.25, 0.9)


def test_cue_strength_correlation_over_hundreds_of_images(tmp_path: Path) -> None:
    """Strength s: P(cue | favoured kind) - P(cue | other kind) = s, checked on 200 images per hospital."""
    strengths = {"H1": 0.8, "H2": 0.2}
    records = generate_mammo(
        tmp_path,
        200,
        hospitals=2,
        seed=1,
        height=64,
        cue_mode="shared",
        cue_sign={"H1": 1, "H2": 1},
        cue_strength=strengths,
    )
    truths = mammo_truths(tmp_path, records)
    for hospital, strength in strengths.items():
        dense = [truths[r.id].cue for r in records if r.domain == hospital and r.label in ("C", "D")]
        fatty = [truths[r.id].cue for r in records if r.domain == hospital and r.label in ("A", "B")]
        assert min(len(dense), len(fatty)) > 50
        assert abs((np.mean(dense) - np.mean(fatty)) - strength) < 0.2, hospital


def test_shared_mode_is_deterministic_and_other_modes_redraw(tmp_path: Path) -> None:
    shared = {"cue_mode": "shared", "label_noise": 0.8, **TINY}
    one = generate_mammo(tmp_path / "one", 4, **shared)
    two = generate_mammo(tmp_path / "two", 4, **shared)
    assert one == two and _files(tmp_path / "one") == _files(tmp_path / "two")
    # the same folder regenerated per hospital: every image is redrawn with its own marker
    per_hospital = generate_mammo(tmp_path / "one", 4, **TINY)
    fresh = generate_mammo(tmp_path / "fresh", 4, **TINY)
    assert per_hospital == fresh and _files(tmp_path / "one") == _files(tmp_path / "fresh")


@pytest.mark.slow  # a spawn pool: about 5 s of start-up alone on a loaded machine
def test_shared_mode_with_two_workers_is_identical(tmp_path: Path) -> None:
    shared = {"cue_mode": "shared", "label_noise": 0.8, **TINY}
    one = generate_mammo(tmp_path / "one", 4, **shared)
    two = generate_mammo(tmp_path / "two", 4, workers=2, **shared)
    assert one == two and _files(tmp_path / "one") == _files(tmp_path / "two")


def test_explicit_default_settings_change_no_byte(tmp_path: Path) -> None:
    implicit = generate_mammo(tmp_path / "implicit", 4, **TINY)
    explicit = generate_mammo(
        tmp_path / "explicit",
        4,
        cue_mode="per_hospital",
        cue_sign={"H1": 1, "H2": -1, "H3": 1, "H4": -1},
        label_noise=1.0,
        **TINY,
    )
    assert implicit == explicit and _files(tmp_path / "implicit") == _files(tmp_path / "explicit")
    params = {mammo_truths(tmp_path / "implicit", implicit)[r.id].params for r in implicit}
    assert params == {"seed=7;height=64;spurious_cue=1.0"}  # the resume key of data sets made before


def test_forced_cue_sets_are_counterfactuals_of_the_drawn_images(tmp_path: Path) -> None:
    """force_cue on / off redraws every image identically except the marker: the two sets differ only
    at marker pixels, the images drawn with the cue equal their 'on' twin, and labels do not move."""
    import pydicom

    shared = {"cue_mode": "shared", "label_noise": 0.8, **TINY}
    drawn = generate_mammo(tmp_path / "drawn", 8, **shared)
    on = generate_mammo(tmp_path / "on", 8, force_cue="on", **shared)
    off = generate_mammo(tmp_path / "off", 8, force_cue="off", **shared)
    assert [(r.id, r.label, r.label_true) for r in on] == [(r.id, r.label, r.label_true) for r in drawn]
    assert [(r.id, r.label) for r in off] == [(r.id, r.label) for r in drawn]
    truths = {
        name: mammo_truths(tmp_path / name, recs)
        for name, recs in (("drawn", drawn), ("on", on), ("off", off))
    }
    assert all(truths["on"][r.id].cue for r in on) and not any(truths["off"][r.id].cue for r in off)

    def pixels(name: str, record) -> np.ndarray:
        return pydicom.dcmread(tmp_path / name / record.path).pixel_array.astype(np.int64)

    drawn_with_cue = 0
    for record in drawn:
        with_cue, without = pixels("on", record), pixels("off", record)
        changed = with_cue != without
        assert 0 < changed.sum() < 0.02 * changed.size, record.id  # the marker, and only the marker
        rows, cols = np.nonzero(changed)
        assert rows.max() - rows.min() < 0.1 * changed.shape[0], record.id  # in one small place
        twin = with_cue if truths["drawn"][record.id].cue else without
        assert np.array_equal(pixels("drawn", record), twin), record.id
        drawn_with_cue += truths["drawn"][record.id].cue
    assert 0 < drawn_with_cue < len(drawn)  # both kinds of twin were compared


def test_a_bad_forced_cue_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="force_cue"):
        generate_mammo(tmp_path / "x", 4, force_cue="maybe", **TINY)
    with pytest.raises(ConfigError, match="synth.force_cue"):
        SynthConfig(force_cue="maybe")


def test_shared_vendor_and_a_larger_marker_make_the_clean_positive_control(tmp_path: Path) -> None:
    """vendor_mode shared: every hospital scans like H1 (same DICOM vendor fields); cue_size scales the
    marker's area with its radius squared; the default settings keep their resume key."""
    import pydicom

    shared = {"cue_mode": "shared", **TINY}
    records = generate_mammo(tmp_path / "same", 8, vendor_mode="shared", **shared)
    vendors = {
        r.domain: (ds.Manufacturer, ds.ManufacturerModelName, ds.BitsStored)
        for r in records
        for ds in [pydicom.dcmread(tmp_path / "same" / r.path, stop_before_pixels=True)]
    }
    assert len(set(vendors.values())) == 1 and len(vendors) == 4
    default = generate_mammo(tmp_path / "default", 8, **shared)
    assert len({pydicom.dcmread(tmp_path / "default" / r.path).Manufacturer for r in default}) > 1

    def marker_area(size: float) -> int:
        out = {}
        for state in ("on", "off"):
            big = {**shared, "height": 256}  # at 64 px both radii round to 2-3 pixels
            recs = generate_mammo(tmp_path / f"{size}{state}", 4, force_cue=state, cue_size=size, **big)
            out[state] = pydicom.dcmread(tmp_path / f"{size}{state}" / recs[0].path).pixel_array.astype(int)
        return int((out["on"] != out["off"]).sum())

    small, large = marker_area(1.0), marker_area(2.0)
    assert 2.5 < large / small < 5.0  # radius 7 vs 13 px: about 3.4x the area
    params = mammo_truths(tmp_path / "same", records)[records[0].id].params
    assert "vendor_mode=shared" in params


@pytest.mark.parametrize(("key", "value"), [("cue_size", 0.0), ("cue_size", 5.0), ("vendor_mode", "mixed")])
def test_bad_positive_control_settings_are_config_errors(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"synth.{key}"):
        SynthConfig(**{key: value})
