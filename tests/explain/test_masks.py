"""CAM -> pseudo-mask rules: known values on hand-made CAMs, policies, and registry contract tests."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from skimage.filters import threshold_otsu

from medseg_weak.errors import ConfigError
from medseg_weak.explain.masks import (
    IGNORE,
    REFINERS,
    THRESHOLDS,
    MaskRule,
    cam_to_mask,
    cams_to_masks,
    check_rule,
    class_cam,
    compute_threshold,
    is_degenerate,
    mask_statistics,
)


def square_cam(size: int = 16, lo: float = 0.1, hi: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """A CAM of ``lo`` with a bright 6x6 square of ``hi``; returns (cam, square as bool)."""
    cam = np.full((size, size), lo, dtype=np.float32)
    square = np.zeros((size, size), dtype=bool)
    square[4:10, 4:10] = True
    cam[square] = hi
    return cam, square


def smooth_cam(shape: tuple[int, int] = (24, 24), seed: int = 0) -> np.ndarray:
    """A blob plus noise in [0, 1]: no ties, so every threshold rule has something to do."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    blob = np.exp(-((yy - 9.0) ** 2 + (xx - 13.0) ** 2) / 30.0)
    return np.clip(0.8 * blob + 0.1 * rng.random(shape), 0, 1)


def disc_region(shape: tuple[int, int] = (24, 24)) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - 12) ** 2 + (xx - 12) ** 2 < 11**2


# ---------------------------------------------------------------------------------- known values


@pytest.mark.parametrize(
    "rule",
    [
        MaskRule(threshold="otsu"),
        MaskRule(threshold="fixed", value=0.5),
        MaskRule(threshold="percentile", value=90),  # the square is 36/256 = 14% of the image
        MaskRule(threshold="mean"),
        MaskRule(threshold="max_fraction", value=0.5),
    ],
    ids=lambda r: r.threshold,
)
def test_bright_square_becomes_the_mask(rule: MaskRule) -> None:
    cam, square = square_cam()
    mask = cam_to_mask(cam, rule=rule)
    np.testing.assert_array_equal(mask, square.astype(np.uint8))


def test_fixed_threshold_is_inclusive() -> None:
    cam = np.array([[0.4, 0.5, 0.6]])
    mask = cam_to_mask(cam, rule=MaskRule(threshold="fixed", value=0.5))
    np.testing.assert_array_equal(mask, [[0, 1, 1]])  # cam >= t is foreground
    assert compute_threshold(cam, rule=MaskRule(threshold="fixed", value=0.5)) == 0.5


def test_otsu_foreground_matches_skimage_strictly_above() -> None:
    cam, region = smooth_cam(), disc_region()
    mask = cam_to_mask(cam, region, MaskRule(threshold="otsu"))
    expected = (cam > threshold_otsu(cam[region])) & region
    np.testing.assert_array_equal(mask == 1, expected)


def test_percentile_threshold_is_the_region_percentile() -> None:
    cam, region = smooth_cam(), disc_region()
    rule = MaskRule(threshold="percentile", value=75)
    assert compute_threshold(cam, region, rule) == pytest.approx(np.percentile(cam[region], 75))
    fg = cam_to_mask(cam, region, rule) == 1
    assert fg.sum() == pytest.approx(0.25 * region.sum(), abs=1)


def test_ignore_band_marks_exactly_the_band() -> None:
    cam = (np.arange(16) / 16).reshape(1, 16)  # dyadic steps: exact in float
    mask = cam_to_mask(cam, rule=MaskRule(threshold="fixed", value=0.5, ignore_band=0.125))
    # |cam - 0.5| < 0.125 holds for 7/16, 8/16, 9/16 only; 6/16 and 10/16 sit on the band's edge
    np.testing.assert_array_equal(mask[0], [0] * 7 + [IGNORE] * 3 + [1] * 6)


def test_low_high_rule_gives_three_zones_on_a_ramp() -> None:
    cam = (np.arange(100) / 100).reshape(10, 10)
    mask = cam_to_mask(cam, rule=MaskRule(low=0.3, high=0.7, threshold="fixed", value=0.99, ignore_band=0.5))
    assert (mask == 0).sum() == 30  # 0.00 .. 0.29
    assert (mask == IGNORE).sum() == 40  # 0.30 .. 0.69
    assert (mask == 1).sum() == 30  # 0.70 .. 0.99 (low/high override threshold and band)
    assert mask.flat[30] == IGNORE and mask.flat[70] == 1


def test_low_equal_high_has_no_ignore_zone() -> None:
    cam = (np.arange(10) / 10).reshape(1, 10)
    mask = cam_to_mask(cam, rule=MaskRule(low=0.5, high=0.5))
    np.testing.assert_array_equal(mask[0], [0] * 5 + [1] * 5)


# ---------------------------------------------------------------------------------- region


@pytest.mark.parametrize("threshold", ["otsu", "mean", "percentile", "max_fraction"])
def test_outside_values_do_not_change_the_mask_inside(threshold: str) -> None:
    cam, square = square_cam()
    region = np.zeros_like(square)
    region[2:14, 2:14] = True
    rule = MaskRule(threshold=threshold, value=80 if threshold == "percentile" else 0.5)
    huge = cam.copy()
    huge[~region] = 1000.0
    reference = cam_to_mask(cam, region, rule)
    np.testing.assert_array_equal(cam_to_mask(huge, region, rule), reference)
    np.testing.assert_array_equal(reference, square.astype(np.uint8))


def test_outside_region_background_or_ignore() -> None:
    cam, square = square_cam()
    region = np.zeros_like(square)
    region[:, :12] = True
    background = cam_to_mask(cam, region, MaskRule(outside_region="background"))
    ignore = cam_to_mask(cam, region, MaskRule(outside_region="ignore"))
    assert (background[~region] == 0).all() and (ignore[~region] == IGNORE).all()
    np.testing.assert_array_equal(background[region], ignore[region])
    np.testing.assert_array_equal(background[region], square[region])


def test_region_accepts_uint8_0_255() -> None:
    cam, _ = square_cam()
    region = np.zeros(cam.shape, dtype=np.uint8)
    region[:, :12] = 255
    np.testing.assert_array_equal(cam_to_mask(cam, region), cam_to_mask(cam, region.astype(bool)))


# ---------------------------------------------------------------------------------- morphology


def test_min_object_px_drops_small_blob_keeps_big_one() -> None:
    cam = np.zeros((12, 12))
    cam[1:6, 1:6] = 1.0  # 25 px
    cam[8:10, 8:10] = 1.0  # 4 px
    rule = MaskRule(threshold="fixed", value=0.5, min_object_px=5)
    mask = cam_to_mask(cam, rule=rule)
    assert (mask[1:6, 1:6] == 1).all() and (mask[8:10, 8:10] == 0).all()
    keep = cam_to_mask(cam, rule=MaskRule(threshold="fixed", value=0.5, min_object_px=4))
    assert (keep[8:10, 8:10] == 1).all()  # "fewer than n pixels": exactly n survives


def test_fill_holes_fills_a_ring() -> None:
    cam = np.zeros((9, 9))
    cam[1:8, 1:8] = 1.0
    cam[3:6, 3:6] = 0.0
    cam[4, 4] = 0.5  # an IGNORE pixel inside the hole is filled too
    rule = MaskRule(threshold="fixed", value=0.5, ignore_band=0.1, fill_holes=True)
    assert cam_to_mask(cam, rule=MaskRule(threshold="fixed", value=0.5, ignore_band=0.1))[4, 4] == IGNORE
    mask = cam_to_mask(cam, rule=rule)
    expected = np.zeros((9, 9), dtype=np.uint8)
    expected[1:8, 1:8] = 1
    np.testing.assert_array_equal(mask, expected)


def test_opening_removes_a_one_pixel_line() -> None:
    cam = np.zeros((14, 14))
    cam[2:8, 2:8] = 1.0
    cam[5, 8:13] = 1.0  # a 1-px line sticking out of the square
    mask = cam_to_mask(cam, rule=MaskRule(threshold="fixed", value=0.5, opening_radius=1))
    expected = np.zeros((14, 14), dtype=np.uint8)
    expected[2:8, 2:8] = 1
    expected[[2, 2, 7, 7], [2, 7, 2, 7]] = 0  # disk(1) is a cross: opening rounds the square's corners
    expected[5, 8] = 1  # the line's first pixel is covered by the cross centred on the square's edge
    np.testing.assert_array_equal(mask, expected)


def test_opening_keeps_tissue_touching_the_image_border() -> None:
    cam = np.zeros((8, 8))
    cam[:, :4] = 1.0  # a breast touching the left image edge
    mask = cam_to_mask(cam, rule=MaskRule(threshold="fixed", value=0.5, opening_radius=1))
    np.testing.assert_array_equal(mask, (cam >= 0.5).astype(np.uint8))


# ---------------------------------------------------------------------------------- degenerate / bad input


@pytest.mark.parametrize("value", [0.0, 0.7], ids=["zeros", "constant"])
@pytest.mark.parametrize("threshold", ["otsu", "fixed", "mean", "percentile"])
def test_constant_cam_is_degenerate_and_all_background(value: float, threshold: str) -> None:
    cam = np.full((8, 8), value)
    assert is_degenerate(cam)
    mask = cam_to_mask(cam, rule=MaskRule(threshold=threshold))
    assert mask.dtype == np.uint8 and (mask == 0).all()
    assert compute_threshold(cam, rule=MaskRule(threshold=threshold)) is None


def test_degenerate_ignore_policy_fills_region_with_ignore() -> None:
    region = np.zeros((8, 8), dtype=bool)
    region[2:6, 2:6] = True
    mask = cam_to_mask(np.zeros((8, 8)), region, MaskRule(degenerate="ignore"))
    assert (mask[region] == IGNORE).all() and (mask[~region] == 0).all()


def test_cam_constant_inside_region_is_degenerate_even_if_not_outside() -> None:
    cam, square = square_cam()
    assert not is_degenerate(cam)
    assert is_degenerate(cam, square)


@pytest.mark.parametrize("outside", ["background", "ignore"])
def test_empty_region(outside: str) -> None:
    cam, _ = square_cam()
    region = np.zeros(cam.shape, dtype=bool)
    assert is_degenerate(cam, region)
    mask = cam_to_mask(cam, region, MaskRule(outside_region=outside))
    assert (mask == (0 if outside == "background" else IGNORE)).all()


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_cam_raises(bad: float) -> None:
    cam, _ = square_cam()
    cam[0, 0] = bad
    with pytest.raises(ValueError, match="NaN" if np.isnan(bad) else "infinite"):
        cam_to_mask(cam)


def test_wrong_shapes_raise_with_hints() -> None:
    cam, square = square_cam()
    with pytest.raises(ValueError, match="class_cam"):
        cam_to_mask(np.stack([cam, cam]))
    with pytest.raises(ValueError, match="region shape"):
        cam_to_mask(cam, square[:-1])
    with pytest.raises(ValueError, match="image shape"):
        cam_to_mask(cam, image=np.zeros((3, 3)))


def test_batch_logs_how_many_were_degenerate(caplog: pytest.LogCaptureFixture) -> None:
    cam, _ = square_cam()
    cams = np.stack([cam, np.zeros_like(cam), np.zeros_like(cam)])
    with caplog.at_level(logging.WARNING, logger="medseg_weak.explain.masks"):
        masks = cams_to_masks(cams)
    assert "2 of 3 CAMs were degenerate" in caplog.text
    assert (masks[1:] == 0).all()
    assert cams_to_masks(np.zeros((0, 5, 6))).shape == (0, 5, 6)


# ---------------------------------------------------------------------------------- class_cam / batch / torch


def test_class_cam_by_index_and_label() -> None:
    stack = np.stack([np.full((4, 5), float(c)) for c in range(4)])  # class c's CAM is all c
    labels = ["A", "B", "C", "D"]
    assert (class_cam(stack, 1) == 1).all()
    assert (class_cam(stack, -1) == 3).all()
    assert (class_cam(stack, "D", labels) == 3).all()
    batch = np.stack([stack, stack + 10])
    picked = class_cam(batch, "C", labels)
    assert picked.shape == (2, 4, 5)
    assert (picked[0] == 2).all() and (picked[1] == 12).all()


def test_class_cam_errors() -> None:
    stack = np.zeros((2, 4, 4))
    with pytest.raises(ConfigError, match="classes: A, D"):
        class_cam(stack, "B", ["A", "D"])
    with pytest.raises(ConfigError, match="no class labels"):
        class_cam(stack, "D")
    with pytest.raises(ConfigError, match="out of range"):
        class_cam(stack, 2)
    with pytest.raises(ConfigError):
        class_cam(stack, True)
    with pytest.raises(ValueError, match=r"\[C, H, W\]"):
        class_cam(np.zeros((4, 4)), 0)


def test_batch_equals_per_image() -> None:
    cams = np.stack([smooth_cam(seed=s) for s in range(3)])
    regions = np.stack([disc_region()] * 3)
    images = cams + 0.05
    rule = MaskRule(threshold="otsu", ignore_band=0.05, refine="intensity", min_object_px=3)
    batch = cams_to_masks(cams, regions, rule, images)
    assert batch.shape == cams.shape and batch.dtype == np.uint8
    for i in range(3):
        np.testing.assert_array_equal(batch[i], cam_to_mask(cams[i], regions[i], rule, images[i]))


def test_torch_tensors_are_accepted() -> None:
    torch = pytest.importorskip("torch")
    cam, square = square_cam()
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        mask = cam_to_mask(torch.from_numpy(cam).to(dtype), torch.from_numpy(square | True))
        np.testing.assert_array_equal(mask, square.astype(np.uint8))
    stack = torch.from_numpy(np.stack([cam, 1 - cam]))
    np.testing.assert_array_equal(class_cam(stack, 0), cam)


# ---------------------------------------------------------------------------------- refiners


def two_sided_case() -> tuple[np.ndarray, np.ndarray, MaskRule]:
    """Columns 0-2 confident bg, 3-4 IGNORE, 5-7 confident fg; the image is dark on the left half
    (columns 0-3) and bright on the right half (columns 4-7)."""
    cam = np.zeros((8, 8))
    cam[:, 3:5] = 0.5
    cam[:, 5:] = 1.0
    image = np.full((8, 8), 0.2)
    image[:, 4:] = 0.8
    return cam, image, MaskRule(low=0.25, high=0.75)


@pytest.mark.parametrize("refine", ["intensity", "random_walk"])
def test_refiner_moves_ignore_pixels_to_the_side_their_intensity_matches(refine: str) -> None:
    cam, image, rule = two_sided_case()
    before = cam_to_mask(cam, rule=rule)
    assert (before[:, 3:5] == IGNORE).all()
    after = cam_to_mask(cam, rule=MaskRule(low=0.25, high=0.75, refine=refine), image=image)
    expected = np.zeros((8, 8), dtype=np.uint8)
    expected[:, 4:] = 1
    np.testing.assert_array_equal(after, expected)


def test_intensity_refinement_keeps_confident_pixels() -> None:
    cam, image, _ = two_sided_case()
    image[0, 6] = 0.2  # a confident fg pixel that looks like background stays foreground
    mask = cam_to_mask(cam, rule=MaskRule(low=0.25, high=0.75, refine="intensity"), image=image)
    assert mask[0, 6] == 1


def test_refine_band_re_decides_pixels_near_the_boundary() -> None:
    cam = np.zeros((6, 6))
    cam[:, 3:] = 1.0
    image = np.full((6, 6), 0.2)
    image[:, 4:] = 0.8  # column 3 is confident fg by the CAM but dark like the background
    rule = MaskRule(threshold="fixed", value=0.5, refine="intensity", refine_band_px=1)
    mask = cam_to_mask(cam, rule=rule, image=image)
    assert (mask[:, :4] == 0).all() and (mask[:, 4:] == 1).all()


def test_random_walk_stays_inside_region() -> None:
    cam, image, _ = two_sided_case()
    region = np.ones((8, 8), dtype=bool)
    region[:, 0] = False
    rule = MaskRule(low=0.25, high=0.75, refine="random_walk", outside_region="ignore")
    mask = cam_to_mask(cam, region, rule, image)
    assert (mask[:, 0] == IGNORE).all() and (mask[:, 1:4] == 0).all() and (mask[:, 4:] == 1).all()


@pytest.mark.parametrize("refine", ["intensity", "random_walk"])
def test_image_refiners_need_the_image(refine: str) -> None:
    cam, _, _ = two_sided_case()
    with pytest.raises(ConfigError, match="needs the image"):
        cam_to_mask(cam, rule=MaskRule(low=0.25, high=0.75, refine=refine))


def test_refiners_without_seeds_of_both_classes_change_nothing() -> None:
    cam = np.zeros((6, 6))
    cam[:, 3:] = 0.5  # background and IGNORE only: no foreground seeds
    for refine in ("intensity", "random_walk"):
        rule = MaskRule(low=0.25, high=0.75, refine=refine)
        mask = cam_to_mask(cam, rule=rule, image=np.random.default_rng(0).random((6, 6)))
        assert (mask[:, 3:] == IGNORE).all() and (mask[:, :3] == 0).all()


# ---------------------------------------------------------------------------------- registry contracts


@pytest.mark.parametrize("name", THRESHOLDS.names())
@pytest.mark.parametrize("outside", ["background", "ignore"])
def test_threshold_contract(name: str, outside: str) -> None:
    cam, region = smooth_cam(), disc_region()
    rule = MaskRule(threshold=name, value=50 if name == "percentile" else 0.5, outside_region=outside)
    t = THRESHOLDS.get(name)(cam, region, rule)
    assert isinstance(t, float) and np.isfinite(t)
    mask = cam_to_mask(cam, region, rule)
    assert mask.dtype == np.uint8 and mask.shape == cam.shape
    assert set(np.unique(mask)) <= {0, 1, IGNORE}
    assert (mask[~region] == (0 if outside == "background" else IGNORE)).all()
    np.testing.assert_array_equal(mask[region] == 1, cam[region] >= t)  # the one boundary convention
    np.testing.assert_array_equal(mask, cam_to_mask(cam, region, rule))


@pytest.mark.parametrize("name", REFINERS.names())
def test_refiner_contract(name: str) -> None:
    cam, region = smooth_cam(), disc_region()
    image = np.clip(cam + 0.1 * np.random.default_rng(1).standard_normal(cam.shape), 0, 1)
    rule = MaskRule(threshold="otsu", ignore_band=0.1, refine=name, outside_region="ignore")
    plain = cam_to_mask(cam, region, MaskRule(threshold="otsu", ignore_band=0.1, outside_region="ignore"))
    mask = cam_to_mask(cam, region, rule, image)
    assert mask.dtype == np.uint8 and mask.shape == cam.shape
    assert set(np.unique(mask)) <= {0, 1, IGNORE}
    confident = plain != IGNORE
    np.testing.assert_array_equal(mask[confident], plain[confident])  # refiners touch only the uncertain
    np.testing.assert_array_equal(mask, cam_to_mask(cam, region, rule, image))


# ---------------------------------------------------------------------------------- config / statistics


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"threshold": "otsuu"}, r"'cams\.mask\.threshold'.*Did you mean 'otsu'.*Valid: fixed, max_fraction"),
        ({"refine": "crf"}, r"'cams\.mask\.refine'.*Valid: intensity, none, random_walk"),
        ({"low": 0.6, "high": 0.4}, r"'cams\.mask\.low' \(0\.6\) must be <="),
        ({"low": 0.6}, r"set both or neither"),
        ({"ignore_band": -0.1}, r"'cams\.mask\.ignore_band' must be >= 0"),
        ({"threshold": "percentile", "value": 150}, r"'cams\.mask\.value'.*0-100"),
        ({"threshold": "max_fraction", "value": 2.0}, r"'cams\.mask\.value'.*0-1"),
        ({"outside_region": "nan"}, r"'cams\.mask\.outside_region' must be one of background, ignore"),
        ({"degenerate": "raise"}, r"'cams\.mask\.degenerate'"),
        ({"min_object_px": -1}, r"'cams\.mask\.min_object_px' must be an integer >= 0"),
        ({"opening_radius": 1.5}, r"'cams\.mask\.opening_radius'"),
        ({"value": float("nan")}, r"'cams\.mask\.value' must be a finite number"),
        ({"fill_holes": "yes"}, r"'cams\.mask\.fill_holes'"),
    ],
)
def test_config_errors(kwargs: dict, match: str) -> None:
    # Values fail when the section is built; registry names when the cams stage validates it.
    with pytest.raises(ConfigError, match=match):
        check_rule(MaskRule(**kwargs))


def test_config_reports_every_problem_at_once() -> None:
    with pytest.raises(ConfigError, match=r"threshold.*refine"):
        check_rule(MaskRule(threshold="x", refine="y"))


def test_mask_statistics_known_values() -> None:
    mask = np.array([[1, 1, 0, 1], [0, 0, 0, 1], [IGNORE, IGNORE, 0, 0]], dtype=np.uint8)
    stats = mask_statistics(mask)
    assert stats == {
        "n_pixels": 12,
        "fg_fraction": 4 / 12,
        "bg_fraction": 6 / 12,
        "ignore_fraction": 2 / 12,
        "n_components": 2,
    }
    with pytest.raises(ValueError, match=r"found \[7\]"):
        mask_statistics(np.array([[0, 7]], dtype=np.uint8))
