"""Tests for medseg_weak.data.preprocess on synthetic phantoms and scikit-image's bundled retina photo."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pytest
import skimage.data

from medseg_weak.data.image import Image
from medseg_weak.data.preprocess import (
    Preprocessed,
    background_level,
    bounding_box,
    breast_mask,
    chest_wall_side,
    largest_component,
    preprocess_fundus,
    preprocess_mammogram,
)
from medseg_weak.errors import InputError

SIZE = 256


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return float((a & b).sum() / max(1, (a | b).sum()))


@dataclass
class Phantom:
    pixels: np.ndarray  # float32 (H, W)
    breast: np.ndarray  # bool: the known half-ellipse
    labels: np.ndarray  # bool: burned-in text bars + lead marker squares


def mammo_phantom(h: int = 1500, w: int = 1000, side: str = "L", seed: int = 0) -> Phantom:
    """Half-ellipse breast on the chest-wall edge ('L' = left edge), bright labels elsewhere, noise.

    Tissue brightness falls off towards the skin line (thinner tissue), as in a real mammogram. The
    text sits in the opposite top corner; one marker square sits in the opposite bottom corner and
    one inside the breast's bounding box but off the breast, so it is zeroed, not cropped away.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r2 = ((yy - h / 2) / (0.42 * h)) ** 2 + (xx / (0.62 * w)) ** 2
    breast = r2 <= 1
    img = np.full((h, w), 0.03, np.float32)
    img[breast] = 0.18 + 0.5 * np.sqrt(1 - r2[breast])
    img[breast] += 0.2 * (np.sin(yy[breast] / 37) * np.cos(xx[breast] / 23) > 0.6)  # "dense" blobs
    img += rng.normal(0, 0.02, img.shape).astype(np.float32)
    labels = np.zeros((h, w), bool)
    for k in range(3):  # text: three bars, top right
        r0 = int(0.04 * h) + k * int(0.03 * h)
        labels[r0 : r0 + int(0.015 * h), int(0.78 * w) : int(0.95 * w)] = True
    m = int(0.04 * w)
    labels[h - 2 * m : h - m, w - 2 * m : w - m] = True  # marker, bottom right corner
    labels[int(0.1 * h) : int(0.1 * h) + m, int(0.5 * w) : int(0.5 * w) + m] = True  # marker in the bbox
    assert not (labels & breast).any()
    img[labels] = 0.95
    img = np.clip(img, 0, 1)
    if side == "R":  # the mirror image: chest wall on the right edge
        return Phantom(img[:, ::-1].copy(), breast[:, ::-1].copy(), labels[:, ::-1].copy())
    return Phantom(img, breast, labels)


@pytest.fixture(scope="module")
def left() -> Phantom:
    return mammo_phantom(side="L")


@pytest.fixture(scope="module")
def right() -> Phantom:
    return mammo_phantom(side="R")


@pytest.fixture(scope="module")
def pre_left(left: Phantom) -> Preprocessed:
    return preprocess_mammogram(Image(left.pixels, {}), SIZE)


@pytest.fixture(scope="module")
def pre_right(right: Phantom) -> Preprocessed:
    return preprocess_mammogram(Image(right.pixels, {}), SIZE)


# ---------------------------------------------------------------------------------------------
# Mammograms
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("side", ["L", "R"])
def test_mask_covers_the_breast(side, pre_left, pre_right, left, right):
    pre, ph = (pre_left, left) if side == "L" else (pre_right, right)
    assert iou(pre.mask, pre.to_model(ph.breast)) > 0.95
    assert iou(pre.to_original(pre.mask, order=0), ph.breast) > 0.95


@pytest.mark.parametrize("side", ["L", "R"])
def test_labels_and_markers_are_removed(side, pre_left, pre_right, left, right):
    pre, ph = (pre_left, left) if side == "L" else (pre_right, right)
    labels_model = pre.to_model(ph.labels)
    assert labels_model.any(), "the in-box marker should fall inside the crop"
    assert not (pre.mask & labels_model).any()
    assert pre.pixels[labels_model].max() == 0.0
    # Nothing bright survives outside the breast: the brightest pixel off the mask is tissue blur.
    assert pre.pixels[~pre.mask].max() < 0.5


def test_laterality_inferred_from_pixels(pre_left, pre_right):
    assert (pre_left.laterality, pre_left.flipped) == ("L", False)
    assert (pre_right.laterality, pre_right.flipped) == ("R", True)


def test_right_breast_is_flipped_to_the_left_edge(pre_left, pre_right):
    for pre in (pre_left, pre_right):
        rows = pre.mask.any(axis=1)
        assert pre.mask[rows, 0].mean() > 0.9  # chest wall on the left edge
        assert not pre.mask[:, pre.resized_shape[1] - 1].any()
    # The R phantom is the exact mirror of the L one, so canonical outputs coincide.
    np.testing.assert_allclose(pre_right.pixels, pre_left.pixels, atol=1e-5)
    assert iou(pre_right.mask, pre_left.mask) > 0.99


def test_crop_box_in_original_coordinates(pre_left, pre_right, left, right):
    for pre, ph in ((pre_left, left), (pre_right, right)):
        r0, c0, r1, c1 = pre.crop_box
        br0, bc0, br1, bc1 = bounding_box(ph.breast)
        assert r0 <= br0 and c0 <= bc0 and r1 >= br1 and c1 >= bc1  # contains the breast
        margin = 0.05 * max(ph.pixels.shape)
        assert br0 - r0 < margin and bc0 - c0 < margin and r1 - br1 < margin and c1 - bc1 < margin
        assert pre.original_shape == ph.pixels.shape
    assert pre_left.crop_box[1] == 0 and pre_right.crop_box[3] == right.pixels.shape[1]


def test_metadata_disagreement_logs_a_warning(right, caplog):
    with caplog.at_level(logging.WARNING, logger="medseg_weak.data.preprocess"):
        pre = preprocess_mammogram(Image(right.pixels, {"laterality": "L", "path": "x.dcm"}), SIZE)
    assert pre.laterality == "R" and pre.flipped  # the pixels win
    assert any("laterality" in r.getMessage() and "x.dcm" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("declared", ["R", "right", None, ""])
def test_metadata_agreement_is_silent(right, caplog, declared):
    with caplog.at_level(logging.WARNING, logger="medseg_weak.data.preprocess"):
        preprocess_mammogram(Image(right.pixels, {"laterality": declared}), SIZE)
    assert not caplog.records


@pytest.mark.parametrize("size", [SIZE, (200, 160)])
def test_output_contract(left, size):
    pre = preprocess_mammogram(Image(left.pixels, {}), size)
    shape = (size, size) if isinstance(size, int) else size
    assert pre.pixels.shape == shape and pre.pixels.dtype == np.float32
    assert pre.mask.shape == shape and pre.mask.dtype == bool
    assert pre.pixels.min() >= 0.0 and pre.pixels.max() <= 1.0
    assert pre.offset == (0, 0)  # anchored top-left: padding right/bottom only
    hr, hc = pre.resized_shape
    assert hr == shape[0] or hc == shape[1]  # the crop fills one dimension
    assert not pre.pixels[hr:].any() and not pre.pixels[:, hc:].any()
    crop_rows, crop_cols = pre.crop_box[2] - pre.crop_box[0], pre.crop_box[3] - pre.crop_box[1]
    assert abs(hr / hc - crop_rows / crop_cols) < 0.02 * crop_rows / crop_cols + 1 / min(hr, hc)


def test_to_model_replays_the_image_geometry(right, pre_right):
    replayed = pre_right.to_model(right.pixels, order=1)
    np.testing.assert_allclose(replayed[pre_right.mask], pre_right.pixels[pre_right.mask], atol=1e-6)


@pytest.mark.parametrize("side", ["L", "R"])
def test_round_trip_model_and_back(side, pre_left, pre_right, left, right):
    pre, ph = (pre_left, left) if side == "L" else (pre_right, right)
    back = pre.to_original(pre.to_model(ph.breast), order=0)
    assert back.dtype == bool and back.shape == ph.breast.shape
    r0, c0, r1, c1 = pre.crop_box
    assert iou(back[r0:r1, c0:c1], ph.breast[r0:r1, c0:c1]) > 0.95
    assert not back[:r0].any() and not back[r1:].any()  # zeros outside the crop
    assert not back[:, :c0].any() and not back[:, c1:].any()


def test_order_zero_keeps_label_values(pre_left, left):
    pseudo = np.where(left.breast, np.uint8(1), np.uint8(0))
    pseudo[: left.pixels.shape[0] // 2][left.breast[: left.pixels.shape[0] // 2]] = 255  # ignore band
    model = pre_left.to_model(pseudo)
    assert model.dtype == np.uint8 and set(np.unique(model)) == {0, 1, 255}
    back = pre_left.to_original(model, order=0)
    assert back.dtype == np.uint8 and set(np.unique(back)) == {0, 1, 255}


def test_to_original_bilinear_for_maps(pre_left):
    cam = np.linspace(0, 1, SIZE * SIZE, dtype=np.float32).reshape(SIZE, SIZE)
    back = pre_left.to_original(cam)
    assert back.shape == pre_left.original_shape and back.dtype == np.float32
    assert back.min() >= 0.0 and back.max() <= 1.0


def test_geometry_rejects_wrong_shapes(pre_left):
    with pytest.raises(ValueError, match="to_model"):
        pre_left.to_model(np.zeros((10, 10)))
    with pytest.raises(ValueError, match="to_original"):
        pre_left.to_original(np.zeros((10, 10)))


def test_dark_low_contrast_mammogram(left):
    dark = left.pixels * np.float32(0.2)
    pre = preprocess_mammogram(Image(dark, {}), SIZE)
    assert pre.laterality == "L"
    assert iou(pre.mask, pre.to_model(left.breast)) > 0.95


def test_rgb_mammogram_is_read_as_grey(left):
    pre = preprocess_mammogram(Image(np.repeat(left.pixels[..., None], 3, axis=2), {}), SIZE)
    assert pre.pixels.ndim == 2 and iou(pre.mask, pre.to_model(left.breast)) > 0.95


@pytest.mark.parametrize("value", [0.0, 0.5])
def test_blank_image_raises_input_error(value):
    blank = Image(np.full((600, 400), value, np.float32), {"path": "blank.dcm"})
    with pytest.raises(InputError, match="no breast") as info:
        preprocess_mammogram(blank, SIZE)
    assert str(info.value.path) == "blank.dcm"


def test_breast_mask_full_resolution(left):
    assert iou(breast_mask(left.pixels), left.breast) > 0.95


def test_small_helpers():
    mask = np.zeros((10, 12), bool)
    mask[2:8, 0:5] = True  # big blob on the left edge
    mask[0, 10:12] = True  # small blob
    assert bounding_box(mask) == (0, 0, 8, 12)
    assert bounding_box(largest_component(mask)) == (2, 0, 8, 5)
    assert chest_wall_side(largest_component(mask)) == "L"
    assert chest_wall_side(largest_component(mask)[:, ::-1]) == "R"
    with pytest.raises(ValueError):
        bounding_box(np.zeros((3, 3), bool))


def test_background_level_ignores_dark_object_pixels():
    rng = np.random.default_rng(0)
    background = rng.normal(0.1, 0.01, 20000)
    shadow = rng.uniform(0.12, 0.2, 15000)  # dark parts of the object, inside Otsu's dark class
    level, noise = background_level(np.concatenate([background, shadow]).astype(np.float32))
    assert abs(level - 0.1) < 0.005 and 0.007 < noise < 0.013
    assert background_level(np.zeros(100, np.float32)) == (0.0, 0.0)  # quantised black: no spread


# ---------------------------------------------------------------------------------------------
# Fundus
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def retina() -> np.ndarray:
    return skimage.data.retina().astype(np.float32) / 255


def fitted_circle(mask: np.ndarray) -> np.ndarray:
    """The circle with the mask's centroid and area."""
    ys, xs = np.nonzero(mask)
    yy, xx = np.mgrid[0 : mask.shape[0], 0 : mask.shape[1]]
    radius2 = mask.sum() / np.pi
    return (yy - ys.mean()) ** 2 + (xx - xs.mean()) ** 2 <= radius2


@pytest.mark.parametrize("exposure", [1.0, 0.15])
def test_retina_field_of_view(retina, exposure):
    pre = preprocess_fundus(Image(retina * np.float32(exposure), {}), SIZE)
    assert pre.pixels.shape == (SIZE, SIZE, 3) and pre.pixels.dtype == np.float32
    assert pre.mask.shape == (SIZE, SIZE) and pre.mask.dtype == bool
    assert pre.laterality is None and not pre.flipped
    assert pre.pixels.min() >= 0.0 and pre.pixels.max() <= 1.0
    assert not pre.pixels[~pre.mask].any()  # outside the FOV is zero
    assert pre.pixels[pre.mask].mean() > 0.02 * exposure
    fov = pre.to_original(pre.mask, order=0)
    assert 0.6 < fov.mean() < 0.85  # the disc fills most of this photo
    assert iou(fov, fitted_circle(fov)) > 0.95  # roughly circular
    assert 0.6 < pre.mask.mean() < 0.85  # cropped to the disc: close to pi/4 of the square


def synthetic_fundus(
    h: int = 480, w: int = 640, seed: int = 0, shadow: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Reddish disc with vignetting on a dark noisy background, a white caption in a corner.

    ``shadow`` darkens the lower 60% of the disc to a few times the black level (an eyelash or
    pupil shadow): still field of view, and exactly what a quality model must see.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx, radius = h / 2, w / 2 + 20, 0.45 * h
    r = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) / radius
    disc = r <= 1
    shade = np.where(disc, 0.25 + 0.5 * (1 - r**2), 0.0).astype(np.float32)  # dark rim
    if shadow:
        shade[yy > cy - 0.2 * radius] *= 0.08
    img = np.stack([shade, 0.45 * shade, 0.2 * shade], axis=2)
    img += rng.normal(0.02, 0.01, img.shape).astype(np.float32)
    img[10:25, 10:90] = 1.0  # caption, separate from the disc
    return np.clip(img, 0, 1), disc


@pytest.mark.parametrize("shadow", [False, True])
def test_synthetic_fundus_disc(shadow):
    img, disc = synthetic_fundus(shadow=shadow)
    pre = preprocess_fundus(Image(img, {}), (SIZE, SIZE))
    assert pre.pixels.shape == (SIZE, SIZE, 3)
    assert iou(pre.mask, pre.to_model(disc)) > 0.95
    assert iou(pre.to_original(pre.mask, order=0), disc) > 0.95
    assert not pre.pixels[~pre.mask].any()  # caption and background zeroed
    r0, c0, r1, c1 = pre.crop_box
    br0, bc0, br1, bc1 = bounding_box(disc)
    assert max(abs(r0 - br0), abs(c0 - bc0), abs(r1 - br1), abs(c1 - bc1)) <= 4
    # Centred padding: equal (within a pixel) margins on both sides.
    (pr, pc), (hr, hc) = pre.offset, pre.resized_shape
    assert abs(pr - (SIZE - pr - hr)) <= 1 and abs(pc - (SIZE - pc - hc)) <= 1
    colour = pre.to_model(img, order=1)
    np.testing.assert_allclose(colour[pre.mask], pre.pixels[pre.mask], atol=1e-6)


def test_fundus_rejects_grey_and_blank():
    with pytest.raises(InputError, match="RGB"):
        preprocess_fundus(Image(np.zeros((100, 100), np.float32), {"path": "f.png"}), SIZE)
    with pytest.raises(InputError, match="no field of view"):
        preprocess_fundus(Image(np.zeros((100, 100, 3), np.float32), {"path": "f.png"}), SIZE)
