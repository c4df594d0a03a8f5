"""Transformation sets: contract tests over the whole registry, plus known values of single members."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torchvision.transforms.v2.functional as F

from medseg_weak.errors import ConfigError, RegistryError
from medseg_weak.invariance.transforms import (
    TRANSFORMATION_SETS,
    make_transformation_set,
    parameter_range,
)

NAMES = TRANSFORMATION_SETS.names()
SEED_STUDY = {
    "identity", "brightness", "contrast", "grayscale", "invert", "posterize", "solarize",
    "scale", "perspective", "rotation", "translation",
}  # fmt: skip
MEDICAL = {"gamma", "gaussian_blur", "gaussian_noise", "jpeg", "vendor_curve"}


def _images(channels: int = 3, n: int = 3, size: int = 24) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.rand(n, channels, size, size, generator=gen)


def test_registry_holds_the_seed_study_sets_and_the_medical_ones():
    assert set(NAMES) == SEED_STUDY | MEDICAL


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("channels", [1, 3])
def test_contract_shape_range_finite_deterministic(name, channels):
    ts = make_transformation_set(name)
    assert len(ts) >= 2 and len(ts.labels) == len(set(ts.labels)) == len(ts)
    x = _images(channels)
    for t in ts:
        y = t(x)
        assert y.shape == x.shape and y.dtype == x.dtype
        assert torch.isfinite(y).all()
        assert y.min() >= -1e-6 and y.max() <= 1 + 1e-6, t.label
        assert torch.equal(t(x), y), f"{t.label} is not deterministic"
        # batch-independent: image 1 alone transforms as it does inside the batch
        torch.testing.assert_close(t(x[1:2]), y[1:2], atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", [n for n in NAMES if make_transformation_set(n).identity_param is not None])
def test_identity_parameter_is_the_identity(name):
    ts = make_transformation_set(name)
    x = _images()
    t = dataclasses.replace(ts, params=(ts.identity_param, ts.identity_param))[0]
    torch.testing.assert_close(t(x), x, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", [n for n in NAMES if make_transformation_set(n).spatial])
def test_spatial_inverse_undoes_the_map_transformation_in_the_centre(name):
    # Any channel count and resolution (feature maps): T^-1(T(m)) = m where T kept the pixels.
    gen = torch.Generator().manual_seed(1)
    smooth = F.gaussian_blur(torch.rand(2, 5, 40, 40, generator=gen), [9, 9], [3.0, 3.0])
    for t in make_transformation_set(name):
        back = t.inverse_on_map(t.on_map(smooth))
        centre = (slice(None), slice(None), slice(14, 26), slice(14, 26))
        torch.testing.assert_close(back[centre], smooth[centre], atol=0.02, rtol=0)


def test_intensity_transformations_leave_maps_put():
    maps = torch.rand(2, 7, 5, 5)
    t = make_transformation_set("brightness")[0]
    assert not t.spatial and t.on_map(maps) is maps and t.inverse_on_map(maps) is maps


def test_right_angle_rotations_are_exact_and_match_torchvision():
    x = _images(1, size=16)
    ts = make_transformation_set("rotation", low=-180, high=180, steps=5)
    assert ts.params == (-180.0, -90.0, 0.0, 90.0, 180.0)
    quarter = ts[3]
    assert torch.equal(quarter(x), torch.rot90(x, 1, dims=(-2, -1)))
    torch.testing.assert_close(quarter(x), F.rotate(x, 90.0), atol=1e-5, rtol=0)
    assert torch.equal(ts[4](x), ts[0](x))


def test_known_values_of_intensity_members():
    x = torch.tensor([0.0, 0.25, 0.5, 1.0]).reshape(1, 1, 2, 2)
    inv = make_transformation_set("invert", low=1.0, high=0.5, steps=2)
    torch.testing.assert_close(inv[0](x), 1 - x)
    torch.testing.assert_close(inv[1](x), torch.full_like(x, 0.5))
    torch.testing.assert_close(make_transformation_set("gamma", low=2, high=4, steps=2)[0](x), x**2)
    post = make_transformation_set("posterize", low=1, high=2, steps=2)[0]
    torch.testing.assert_close(post(x), torch.tensor([0.0, 0.0, 0.5, 0.5]).reshape(1, 1, 2, 2))
    curve = make_transformation_set("vendor_curve", low=6, high=2, steps=2)[0]
    torch.testing.assert_close(curve(x), torch.log1p(6 * x) / torch.log1p(torch.tensor(6.0)))


def test_noise_is_one_seeded_field_per_parameter():
    x = torch.full((2, 1, 8, 8), 0.5)
    a = make_transformation_set("gaussian_noise", seed=3)
    b = make_transformation_set("gaussian_noise", seed=3)
    c = make_transformation_set("gaussian_noise", seed=4)
    assert torch.equal(a[-1](x), b[-1](x))
    assert not torch.equal(a[-1](x), c[-1](x))
    assert not torch.equal(a[-1](x), a[-2](x))
    assert torch.equal(a[-1](x)[0], a[-1](x)[1])  # the same field for every image of the batch


def test_translation_moves_by_a_fraction_of_each_side():
    x = torch.zeros(1, 1, 20, 20)
    x[..., 5, 5] = 1.0
    y = make_transformation_set("translation", low=0.1, high=0.2, steps=2)[0](x)
    assert y[0, 0].argmax().item() == 7 * 20 + 7


def test_parameter_ranges_and_bad_parameters():
    assert parameter_range("r", -30, 30, 9)[:3] == (-30.0, -22.5, -15.0)
    assert parameter_range("g", 0.5, 2.0, 3, geometric=True) == (0.5, 1.0, 2.0)
    with pytest.raises(ConfigError, match="'steps' must be an integer >= 1"):
        make_transformation_set("rotation", steps=0)
    with pytest.raises(ConfigError, match="one step needs low == high"):
        make_transformation_set("rotation", steps=1)
    with pytest.raises(ConfigError, match="parameter range is empty"):
        type(make_transformation_set("rotation"))("empty", (), lambda x, p: x)
    with pytest.raises(ConfigError, match=r"quality must lie in 1\.\.100"):
        make_transformation_set("jpeg", low=0, high=50)
    with pytest.raises(ConfigError, match="unexpected keyword"):
        make_transformation_set("identity", low=1)
    with pytest.raises(RegistryError, match=r"Did you mean 'rotation'\?.*Valid: brightness"):
        make_transformation_set("rotaton")
