"""CAM equivariance: a map that follows the input scores 1, a map that ignores it is flagged."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as tF
from torch import nn

from medseg_weak.errors import ConfigError, RegistryError
from medseg_weak.invariance import make_transformation_set
from medseg_weak.invariance.cam_equivariance import cam_equivariance, pearson


class _Fixed(nn.Module):
    """Feature maps that are a fixed off-centre blob whatever the input (its CAM cannot move)."""

    def __init__(self, blob: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("blob", blob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blob.expand(x.shape[0], 2, -1, -1) + 0 * x.mean()


class _Toy(nn.Module):
    """The classifier contract (cam_layer, forward_features / forward_head) around one feature layer."""

    def __init__(self, features: nn.Module) -> None:
        super().__init__()
        self.features = features
        self.head = nn.Linear(2, 2)
        nn.init.constant_(self.head.weight, 1.0)

    @property
    def cam_layer(self) -> nn.Module:
        return self.features

    def cam_layers(self) -> dict[str, nn.Module]:
        return {"features": self.features}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _blob(size: int = 16, at: tuple[int, int] = (4, 11)) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return torch.exp(-((yy - at[0]) ** 2 + (xx - at[1]) ** 2) / 6.0).float()


def _follower() -> _Toy:
    conv = nn.Conv2d(1, 2, 1)  # both channels = the image: Grad-CAM = the normalised image
    nn.init.constant_(conv.weight, 1.0)
    nn.init.zeros_(conv.bias)
    return _Toy(conv).eval()


def _images(n: int = 3) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return (0.4 * _blob()[None, None] + 0.05 * torch.rand(n, 1, 16, 16, generator=gen)).float()


def test_pearson_known_values():
    a = np.array([1.0, 2.0, 3.0])
    assert pearson(a, 2 * a + 1) == pytest.approx(1.0)
    assert pearson(a, -a) == pytest.approx(-1.0)
    assert math.isnan(pearson(a, np.ones(3)))


def test_maps_that_move_with_the_input_score_1_and_are_not_flagged():
    turns = make_transformation_set("rotation", low=0, high=270, steps=4)
    result = cam_equivariance(_follower(), _images(), turns, methods=["gradcam", "hirescam"])
    assert result.stays_put() == {"gradcam": False, "hirescam": False}
    for row in result.rows:
        assert row.pearson == pytest.approx(1.0, abs=1e-5) and row.dice == 1.0 and row.n_images == 3
        assert row.is_identity == (row.param == 0.0)
        if not row.is_identity:
            assert row.pearson_unmoved < 0.5  # the blob did move
    brightness = make_transformation_set("brightness", low=0.5, high=1.4, steps=3)
    for row in cam_equivariance(_follower(), _images(), brightness).rows:
        assert row.pearson == pytest.approx(1.0, abs=1e-5) and row.dice == 1.0
        assert math.isnan(row.pearson_unmoved)


def test_maps_that_stay_put_while_the_image_moves_are_flagged(tmp_path):
    model = _Toy(_Fixed(torch.stack([_blob(), _blob()]))).eval()
    turns = make_transformation_set("rotation", low=0, high=270, steps=4)
    result = cam_equivariance(model, _images(), turns)
    assert result.stays_put() == {"gradcam": True}
    moved = [r for r in result.rows if not r.is_identity]
    assert all(r.pearson_unmoved == pytest.approx(1.0) and r.pearson < 0.5 for r in moved)
    path = result.to_csv(tmp_path / "cam_equivariance.csv")
    with path.open() as f:
        rows = list(csv.DictReader(f))
    assert [r["transformation"] for r in rows] == turns.labels and rows[1]["stays_put"] == "True"


def test_bad_input_fails_before_any_cam():
    turns = make_transformation_set("rotation", steps=3)
    with pytest.raises(RegistryError, match="unknown CAM method 'gradkam'"):
        cam_equivariance(_follower(), _images(), turns, methods=["gradkam"])
    with pytest.raises(ConfigError, match="changes the images"):
        cam_equivariance(_follower(), _images(), [lambda x: x, lambda x: tF.interpolate(x, scale_factor=2.0)])
    with pytest.raises(ConfigError, match="at least 2 transformations"):
        cam_equivariance(_follower(), _images(), turns[:1])
