"""Pointing game, relevance mass / rank (Quantus' definitions) and energy outside the region."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medseg_weak.core.overlap import energy_outside, saliency_scores


def test_a_map_concentrated_inside_the_mask_scores_pointing_1_and_mass_about_1():
    mask = np.zeros((16, 16), bool)
    mask[4:8, 4:8] = True
    cam = np.full((16, 16), 1e-4)
    cam[mask] = 1.0
    s = saliency_scores(cam, mask)
    assert s["pointing"] == 1.0 and s["relevance_rank"] == 1.0
    assert s["relevance_mass"] == pytest.approx(16 / (16 + 240e-4)) and s["relevance_mass"] > 0.99


def test_a_map_outside_the_mask_scores_0():
    mask = np.zeros((16, 16), bool)
    mask[4:8, 4:8] = True
    s = saliency_scores(np.where(mask, 0.0, 1.0), mask)
    assert s["pointing"] == 0.0 and s["relevance_mass"] == 0.0 and s["relevance_rank"] == 0.0


def test_relevance_rank_known_value():
    # K = 2 mask pixels; the two highest map values are at (0, 0) (in the mask) and (1, 1) (not)
    cam = np.array([[0.9, 0.1], [0.2, 0.8]])
    mask = np.array([[1, 1], [0, 0]])
    assert saliency_scores(cam, mask)["relevance_rank"] == 0.5


def test_empty_mask_is_nan():
    s = saliency_scores(np.ones((3, 3)), np.zeros((3, 3)))
    assert all(math.isnan(v) for v in s.values())


def test_energy_outside_the_region():
    cam = np.array([[1.0, 3.0], [0.0, 0.0]])
    region = np.array([[1, 0], [1, 1]])
    assert energy_outside(cam, region) == pytest.approx(0.75)
    assert energy_outside(cam, np.ones((2, 2))) == 0.0
    assert math.isnan(energy_outside(np.zeros((2, 2)), region))
