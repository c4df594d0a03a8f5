"""Random and centre-bias baseline maps, and the "no better than random" flag."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg_weak.interpret.baselines import BASELINES, no_better_than_random
from medseg_weak.interpret.faithfulness import curve_area, perturbation_curves
from tests.interpret.conftest import SIZE, WindowModel, window_map


@pytest.mark.parametrize("name", BASELINES.names())
def test_baseline_contract(name):
    make = BASELINES.get(name)
    maps = make(3, (12, 10), None, 0)
    assert maps.shape == (3, 12, 10) and maps.min() >= 0 and maps.max() <= 1
    assert torch.equal(maps, make(3, (12, 10), None, 0))


def test_random_differs_per_seed_and_centre_peaks_at_the_region_centroid():
    assert not torch.equal(
        BASELINES.get("random")(1, (8, 8), None, 0), BASELINES.get("random")(1, (8, 8), None, 1)
    )
    centre = BASELINES.get("centre")(1, (9, 9), None, 0)
    assert divmod(int(centre.argmax()), 9) == (4, 4)
    region = torch.zeros(1, 9, 9, dtype=torch.bool)
    region[0, 0:3, 0:3] = True  # centroid (1, 1)
    assert divmod(int(BASELINES.get("centre")(1, (9, 9), region, 0).argmax()), 9) == (1, 1)


def test_flag_rule_known_values():
    # d = random - method; flagged when mean(d) <= 2 SE(d)
    assert not no_better_than_random(np.array([0.1, 0.2, 0.1]), np.array([0.5, 0.5, 0.5]))
    assert no_better_than_random(np.array([0.4, 0.6, 0.4, 0.6]), np.array([0.5, 0.5, 0.5, 0.5]))
    # d = [0.1, 0.3, 0.1, 0.3]: mean 0.2, SE 0.0577 -> 3.5 SE: not flagged; d = [0, 0.2, 0, 0.2]: 1.7 SE
    assert not no_better_than_random(np.array([0.4, 0.2, 0.4, 0.2]), np.full(4, 0.5))
    assert no_better_than_random(np.array([0.5, 0.3, 0.5, 0.3]), np.full(4, 0.5))
    assert no_better_than_random(np.array([0.1]), np.array([0.5]))  # one image: no evidence either way


def test_random_baseline_flagged_against_a_good_map():
    x = torch.full((8, 1, SIZE, SIZE), 0.1)
    x[:, :, 8:16, 8:16] = 1.0
    ids = torch.ones(8, dtype=torch.long)
    model = WindowModel(k=8.0, offset=4.0)

    def auc(maps):
        return curve_area(perturbation_curves(model, x, maps, ids, steps=8, replacement="zero")).numpy()

    random_auc = auc(BASELINES.get("random")(8, (SIZE, SIZE), None, 0))
    other_random = auc(BASELINES.get("random")(8, (SIZE, SIZE), None, 1))
    assert not no_better_than_random(auc(window_map(8)), random_auc)
    assert no_better_than_random(other_random, random_auc)
    assert no_better_than_random(auc(1.0 - window_map(8)), random_auc)  # worse than random: flagged too
