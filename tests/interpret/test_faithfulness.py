"""Deletion / insertion curves, confidence change and the replacement values: known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget

from medseg_weak.classify.model import Classifier
from medseg_weak.errors import ConfigError, RegistryError
from medseg_weak.interpret.faithfulness import (
    REPLACEMENTS,
    confidence_change,
    curve_area,
    perturbation_curves,
    pixel_ranks,
    step_counts,
)
from medseg_weak.interpret.scores import class_scores
from tests.interpret.conftest import SIZE, WindowModel, window_map

ONES = torch.ones(2, 1, SIZE, SIZE)
CLASS_1 = torch.ones(2, dtype=torch.long)


def _curves(maps: torch.Tensor, mode: str, **kw) -> torch.Tensor:
    return perturbation_curves(
        WindowModel(), ONES, maps, CLASS_1, mode=mode, steps=16, replacement="zero", score="logit", **kw
    )


def test_deleting_the_true_evidence_first_gives_the_known_curve_and_area():
    # 64 window pixels of 1024, 16 steps of 64 pixels: the window is gone after step 1 (logit 4 -> 0)
    # when it is ranked first, and only at the last step when it is ranked last.
    inside, outside = window_map(), 1.0 - window_map()
    first, last = _curves(inside, "deletion"), _curves(outside, "deletion")
    assert torch.allclose(first[0], torch.tensor([4.0] + [0.0] * 16))
    assert torch.allclose(last[0], torch.tensor([4.0] * 16 + [0.0]))
    assert curve_area(first).tolist() == pytest.approx([4 / 32] * 2)
    assert curve_area(last).tolist() == pytest.approx([4 * 31 / 32] * 2)


def test_insertion_is_the_mirror_image():
    inside, outside = window_map(), 1.0 - window_map()
    assert curve_area(_curves(inside, "insertion")).tolist() == pytest.approx([4 * 31 / 32] * 2)
    assert curve_area(_curves(outside, "insertion")).tolist() == pytest.approx([4 / 32] * 2)


@pytest.mark.parametrize("replacement", ["blur", "mean", "zero"])
def test_true_evidence_first_drops_the_probability_fastest_for_every_replacement(replacement):
    # an image whose window is bright on a dark background: every replacement value dims the window
    x = torch.full((2, 1, SIZE, SIZE), 0.1)
    x[:, :, 8:16, 8:16] = 1.0
    kw = dict(targets=CLASS_1, steps=8, replacement=replacement)
    model = WindowModel(k=8.0, offset=4.0)  # P(class 1) = 0.98 for the bright window, 0.04 for 0.1
    good = perturbation_curves(model, x, window_map(), **kw)
    bad = perturbation_curves(model, x, 1.0 - window_map(), **kw)
    assert (curve_area(good) < curve_area(bad) - 0.05).all()
    assert (good[:, 1] < good[:, 0] - 0.05).all()  # the first step already dims the evidence


def _loop_reference(model, images, maps, targets, steps, replacement):
    """One image and one step at a time: what the vectorised version must reproduce."""
    out = torch.empty(len(images), steps + 1)
    for i in range(len(images)):
        base = REPLACEMENTS.get(replacement)(images[i : i + 1])
        order = torch.argsort(-maps[i].flatten(), stable=True)
        for s, k in enumerate(step_counts(maps[i].numel(), steps).tolist()):
            x = images[i : i + 1].clone().flatten(2)
            x[..., order[:k]] = base.flatten(2)[..., order[:k]]
            with torch.no_grad():
                p = model(x.reshape_as(images[i : i + 1])).softmax(1)[0, targets[i]]
            out[i, s] = p
    return out


def test_vectorised_curves_equal_the_per_step_loop_and_do_not_depend_on_batch_size():
    torch.manual_seed(0)
    model = Classifier.create("tiny_cnn", 1, 3).eval()
    images, maps = torch.rand(3, 1, 16, 16), torch.rand(3, 16, 16)
    targets = torch.tensor([0, 1, 2])
    ours = perturbation_curves(model, images, maps, targets, steps=5, replacement="mean", batch_size=7)
    one_by_one = perturbation_curves(model, images, maps, targets, steps=5, replacement="mean", batch_size=1)
    ref = _loop_reference(model, images, maps, targets, 5, "mean")
    assert torch.allclose(ours, ref, atol=1e-5) and torch.allclose(one_by_one, ref, atol=1e-5)


def test_pixel_ranks_break_ties_by_raster_order():
    maps = torch.tensor([[[0.5, 0.9], [0.5, 0.1]]])
    assert pixel_ranks(maps).tolist() == [[1, 0, 2, 3]]
    assert step_counts(10, 4).tolist() == [0, 2, 5, 8, 10]  # round(2.5) -> 2 (banker's), 7.5 -> 8


@pytest.mark.parametrize(
    "score, target", [("logit", ClassifierOutputTarget), ("probability", ClassifierOutputSoftmaxTarget)]
)
def test_confidence_change_equals_pytorch_grad_cam(score, target):
    torch.manual_seed(1)
    model = Classifier.create("tiny_cnn", 1, 3).eval()
    images, maps = torch.rand(4, 1, 16, 16), torch.rand(4, 16, 16)
    ids = torch.tensor([0, 1, 2, 1])
    lib = CamMultImageConfidenceChange()(images, maps.numpy(), [target(int(i)) for i in ids], model)
    ours = confidence_change(model, images, maps, ids, score=score)
    assert np.allclose(ours.numpy(), lib, atol=1e-6)


def test_keeping_only_the_evidence_keeps_the_score():
    change = confidence_change(WindowModel(), ONES, window_map(), CLASS_1, score="logit")
    assert change.tolist() == pytest.approx([0.0, 0.0])
    lost = confidence_change(WindowModel(), ONES, 1.0 - window_map(), CLASS_1, score="logit")
    assert lost.tolist() == pytest.approx([-4.0, -4.0])


@pytest.mark.parametrize("name", REPLACEMENTS.names())
def test_replacement_contract(name):
    x = torch.rand(2, 3, 20, 18)
    out = REPLACEMENTS.get(name)(x)
    assert out.shape == x.shape and torch.isfinite(out).all() and torch.equal(out, REPLACEMENTS.get(name)(x))
    assert not torch.equal(out, x)  # a replacement that changes nothing would make deletion a no-op


def test_bad_arguments_are_named():
    with pytest.raises(RegistryError, match=r"replacement value 'noise'.*Valid: blur, mean, zero"):
        perturbation_curves(WindowModel(), ONES, window_map(), CLASS_1, replacement="noise")
    with pytest.raises(ConfigError, match="steps"):
        perturbation_curves(WindowModel(), ONES, window_map(), CLASS_1, steps=0)
    with pytest.raises(ConfigError, match="maps must be"):
        perturbation_curves(WindowModel(), ONES, window_map(3), CLASS_1)
    with pytest.raises(ConfigError, match="probability, logit"):
        class_scores(WindowModel(), ONES, CLASS_1, score="softmax")
