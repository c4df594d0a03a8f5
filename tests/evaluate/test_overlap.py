import math

import numpy as np
import pytest

from medseg_weak.core.overlap import overlap, pseudo_mask_overlap, saliency_scores


def test_dice_known_value():
    # smp's known value: [1,1,1,1] vs [1,1,0,0] -> 2*2 / (4+2) = 2/3
    scores = overlap(np.array([1, 1, 1, 1]), np.array([1, 1, 0, 0]))
    assert scores["dice"] == pytest.approx(2 / 3) and scores["iou"] == pytest.approx(0.5)


def test_empty_mask_policy():
    empty = np.zeros(4)
    assert overlap(empty, empty) == {"dice": 1.0, "iou": 1.0}
    assert overlap(empty, np.ones(4)) == {"dice": 0.0, "iou": 0.0}


def test_ignore_pixels_are_left_out():
    mask = np.array([1, 1, 255, 0])
    truth = np.array([1, 1, 1, 0])
    scores = pseudo_mask_overlap(mask, truth)
    assert scores["dice"] == 1.0 and scores["ignored"] == 0.25


def test_saliency_scores():
    cam = np.array([[0.0, 0.2], [0.9, 0.1]])
    truth = np.array([[0, 0], [1, 0]])
    s = saliency_scores(cam, truth)
    assert s["pointing"] == 1.0 and s["relevance_mass"] == pytest.approx(0.9 / 1.2)
    assert saliency_scores(cam, np.array([[1, 0], [0, 0]]))["pointing"] == 0.0
    assert math.isnan(saliency_scores(cam, np.zeros((2, 2)))["pointing"])
