import math

import numpy as np
import pytest
import torch
from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

from medseg_weak.core.overlap import overlap
from medseg_weak.evaluate.metrics import batch_segmentation_metrics, segmentation_metrics


def _one_hot(mask: np.ndarray) -> torch.Tensor:
    # MONAI's documented input: [B, C, H, W] one-hot, background in channel 0.
    fg = torch.as_tensor(mask).bool()
    return torch.stack([~fg, fg])[None].float()


def _random_pair(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(8, 40)), int(rng.integers(8, 40)))
    pred = rng.random(shape) < rng.uniform(0.05, 0.5)
    target = rng.random(shape) < rng.uniform(0.05, 0.5)
    pred[0, 0] = target[-1, -1] = True  # guarantee both are non-empty
    return pred, target


def _pixels(shape: tuple[int, int], *coords: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    for r, c in coords:
        mask[r, c] = True
    return mask


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("spacing", [None, (1.0, 1.0), (0.5, 2.0)])
@pytest.mark.parametrize("seed", range(5))
def test_matches_monai_on_non_empty_masks(seed, spacing):
    pred, target = _random_pair(seed)
    expected_hd95 = compute_hausdorff_distance(
        _one_hot(pred), _one_hot(target), include_background=False, percentile=95, spacing=spacing
    )
    expected_assd = compute_average_surface_distance(
        _one_hot(pred), _one_hot(target), include_background=False, symmetric=True, spacing=spacing
    )
    scores = segmentation_metrics(pred, target, spacing)
    assert scores["hd95"] == float(expected_hd95[0, 0])
    assert scores["assd"] == float(expected_assd[0, 0])
    assert scores["dice"] == overlap(pred, target)["dice"]
    assert scores["iou"] == overlap(pred, target)["iou"]
    assert all(math.isfinite(v) for v in scores.values())


def test_two_pixels_three_apart():
    scores = segmentation_metrics(_pixels((8, 8), (2, 2)), _pixels((8, 8), (2, 5)))
    assert scores == {"dice": 0.0, "iou": 0.0, "hd95": pytest.approx(3.0), "assd": pytest.approx(3.0)}


def test_dice_known_value():
    # smp's known value, as a 1x4 image: [1,1,1,1] vs [1,1,0,0] -> 2*2 / (4+2) = 2/3
    scores = segmentation_metrics(np.array([[1, 1, 1, 1]]), np.array([[1, 1, 0, 0]]))
    assert scores["dice"] == pytest.approx(2 / 3)
    assert scores["iou"] == pytest.approx(0.5)


def test_square_shifted_by_two_pixels():
    square = np.zeros((12, 12), dtype=bool)
    square[2:6, 2:6] = True
    shifted = np.roll(square, 2, axis=1)
    scores = segmentation_metrics(square, shifted)
    assert scores["hd95"] == pytest.approx(2.0)
    assert scores["dice"] == pytest.approx(0.5)  # 8 shared pixels of 16 + 16


def test_identical_masks_are_perfect():
    mask = np.zeros((10, 10), dtype=bool)
    mask[3:7, 2:8] = True
    assert segmentation_metrics(mask, mask) == {"dice": 1.0, "iou": 1.0, "hd95": 0.0, "assd": 0.0}


@pytest.mark.parametrize("spacing", [None, (0.5, 3.0)])
def test_both_empty(spacing):
    empty = np.zeros((6, 9), dtype=bool)
    assert segmentation_metrics(empty, empty, spacing) == {"dice": 1.0, "iou": 1.0, "hd95": 0.0, "assd": 0.0}


@pytest.mark.parametrize(
    ("spacing", "diagonal"),
    [(None, math.hypot(6, 8)), ((0.5, 2.0), math.hypot(6 * 0.5, 8 * 2.0))],
)
@pytest.mark.parametrize("empty_side", ["pred", "target"])
def test_one_empty_scores_the_image_diagonal(spacing, diagonal, empty_side):
    empty = np.zeros((6, 8), dtype=bool)
    lesion = _pixels((6, 8), (2, 3), (2, 4))
    pred, target = (empty, lesion) if empty_side == "pred" else (lesion, empty)
    scores = segmentation_metrics(pred, target, spacing)
    assert scores == {
        "dice": 0.0,
        "iou": 0.0,
        "hd95": pytest.approx(diagonal),
        "assd": pytest.approx(diagonal),
    }


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_one_empty_is_finite_where_monai_is_not():
    # The motivating bug (MONAI #9095): MONAI gives NaN here, so the missed case drops out of a nanmean.
    empty, lesion = np.zeros((6, 8), dtype=bool), _pixels((6, 8), (2, 3))
    with pytest.warns(UserWarning):
        monai_hd95 = compute_hausdorff_distance(
            _one_hot(empty), _one_hot(lesion), include_background=False, percentile=95
        )
    assert math.isnan(float(monai_hd95[0, 0]))
    assert math.isfinite(segmentation_metrics(empty, lesion)["hd95"])


def test_anisotropic_spacing_scales_each_axis():
    pred = _pixels((8, 8), (2, 2))
    along_cols = segmentation_metrics(pred, _pixels((8, 8), (2, 5)), spacing=(1.0, 2.0))
    along_rows = segmentation_metrics(pred, _pixels((8, 8), (5, 2)), spacing=(1.0, 2.0))
    assert along_cols["hd95"] == pytest.approx(6.0) and along_cols["assd"] == pytest.approx(6.0)
    assert along_rows["hd95"] == pytest.approx(3.0) and along_rows["assd"] == pytest.approx(3.0)
    # Overlap does not depend on pixel size.
    assert along_cols["dice"] == segmentation_metrics(pred, _pixels((8, 8), (2, 5)))["dice"]


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_numpy_and_torch_inputs_agree():
    pred, target = _random_pair(7)
    from_numpy = segmentation_metrics(pred, target, (0.7, 1.3))
    from_torch = segmentation_metrics(
        torch.from_numpy(pred), torch.from_numpy(target).to(torch.uint8), (0.7, 1.3)
    )
    assert from_numpy == from_torch


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(4, 5\).*\(4, 6\)"):
        segmentation_metrics(np.zeros((4, 5)), np.zeros((4, 6)))
    with pytest.raises(ValueError, match=r"\(2, 4, 5\).*\(3, 4, 5\)"):
        batch_segmentation_metrics(np.zeros((2, 4, 5)), np.zeros((3, 4, 5)))


def test_rejects_wrong_rank_and_bad_spacing():
    with pytest.raises(ValueError, match="HxW"):
        segmentation_metrics(np.zeros((2, 4, 5)), np.zeros((2, 4, 5)))
    with pytest.raises(ValueError, match=r"\[B, H, W\]"):
        batch_segmentation_metrics(np.zeros((4, 5)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="spacing"):
        segmentation_metrics(np.zeros((4, 5)), np.zeros((4, 5)), spacing=(1.0, 0.0))


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_batch_matches_per_image():
    pred, target = _random_pair(11)
    empty, full = np.zeros(pred.shape, bool), np.ones(pred.shape, bool)
    preds = np.stack([pred, empty, empty])
    targets = np.stack([target, full, empty])
    results = batch_segmentation_metrics(
        torch.from_numpy(preds), torch.from_numpy(targets), spacing=(2.0, 1.0)
    )
    assert len(results) == 3
    for result, p, t in zip(results, preds, targets):
        assert result == segmentation_metrics(p, t, spacing=(2.0, 1.0))
    assert results[2] == {"dice": 1.0, "iou": 1.0, "hd95": 0.0, "assd": 0.0}
