"""Our streaming measures against tmeasures itself, per unit, when tmeasures is installed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medseg_weak.invariance import make_transformation_set, measure_invariances
from medseg_weak.invariance.tmeasures_bridge import (
    TMEASURES_MEASURES,
    tmeasures_available,
    tmeasures_per_unit,
)

pytestmark = pytest.mark.skipif(
    not tmeasures_available(),
    reason="tmeasures is not installed (pip install --no-deps tmeasures statsmodels; see tmeasures_bridge)",
)
LAYERS = ["0", "2", "3", "5"]


def _setup() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3, padding=1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 3),
    ).eval()
    return model, torch.rand(9, 1, 16, 16, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("average", [False, True])
@pytest.mark.parametrize("kind", ["invariance", "same_equivariance"])
def test_per_unit_values_match_tmeasures(kind, average):
    model, x = _setup()
    ts = make_transformation_set("rotation", steps=4)
    names = [
        m for m in TMEASURES_MEASURES if m.endswith("same_equivariance") == (kind == "same_equivariance")
    ]
    layers = LAYERS[:2] if kind == "same_equivariance" else LAYERS  # only maps can be transformed
    ours = measure_invariances(model, x, ts, layers, names, batch_size=4, average_feature_maps=average)
    for name in names:
        theirs = tmeasures_per_unit(model, x, ts, layers, name, batch_size=4, average_feature_maps=average)
        for layer in layers:
            assert ours[name].per_unit[layer].shape == theirs[layer].shape
            # float64 statistics on both sides; tmeasures batches a sample's transformations together, we
            # a transformation's samples, and the float32 forwards of different batches differ by ~1e-7
            np.testing.assert_allclose(ours[name].per_unit[layer], theirs[layer], rtol=1e-5, atol=1e-9)
