"""measure_invariance: known values, agreement with the direct definitions, groups, and bad input."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import scipy.stats
import torch
import torch.nn.functional as tF
from torch import nn

from medseg_weak.errors import ConfigError
from medseg_weak.invariance import MEASURES, make_transformation_set, measure_invariance, measure_invariances
from medseg_weak.invariance.measures import ANOVA_ALPHA, safe_divide

VARIANCES = ("transformation_variance", "sample_variance", "normalized_variance")


def _cnn(seed: int = 0, channels: int = 1) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(channels, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 3, 3, padding=1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(3, 2),
    ).eval()


def _images(n: int = 7, channels: int = 1, size: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed))


def _quarter_turns() -> object:
    return make_transformation_set("rotation", low=0, high=270, steps=4)


class _Counting(nn.Module):
    """Wraps a model and counts its forward passes (bad input must fail before the first)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.inner(x)


# ---- known values ---------------------------------------------------------------------------------


def test_constant_model_has_transformation_variance_0_and_normalized_variance_1():
    model = _cnn()
    for conv in (model[0], model[2]):
        nn.init.zeros_(conv.weight)
        nn.init.constant_(conv.bias, 0.3)
    out = measure_invariances(
        model, _images(), make_transformation_set("brightness"), ["0", "3", "5"], VARIANCES
    )
    for layer in ("0", "3", "5"):
        assert np.all(out["transformation_variance"].per_unit[layer] == 0)
        assert np.all(out["sample_variance"].per_unit[layer] == 0)
        assert np.all(out["normalized_variance"].per_unit[layer] == 1)
        assert out["normalized_variance"].per_layer[layer] == 1.0


def test_identity_transformations_give_0_everywhere():
    measures = [*VARIANCES, "anova", "normalized_variance_same_equivariance"]
    out = measure_invariances(_cnn(), _images(), make_transformation_set("identity"), ["0", "2"], measures)
    assert out["sample_variance"].per_layer["2"] > 0  # the samples do differ
    for name in measures:
        if name != "sample_variance":
            for layer in ("0", "2"):
                assert np.all(out[name].per_unit[layer] == 0), (name, layer)


def test_global_average_pooling_is_invariant_to_quarter_turns_by_construction():
    # a pointwise conv commutes with rotations, so its pooled output cannot change with a quarter turn
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2)
    )
    nn.init.uniform_(model[0].weight, 0.5, 1.0)  # no dead unit: its 0/0 would read 1 by convention
    nn.init.constant_(model[0].bias, 0.1)
    measures = ["transformation_variance", "normalized_variance", "normalized_variance_same_equivariance"]
    out = measure_invariances(model.eval(), _images(), _quarter_turns(), ["1", "2"], measures)
    assert out["transformation_variance"].per_layer["2"] < 1e-7
    assert out["normalized_variance"].per_layer["2"] < 1e-5
    assert out["normalized_variance"].per_layer["1"] > 0.5  # the map before pooling moves
    # ... and moves exactly with the input: same-equivariant
    assert out["normalized_variance_same_equivariance"].per_layer["1"] == 0.0


def test_safe_divide_conventions():
    num = torch.tensor([0.0, 2.0, 3.0, 0.0])
    den = torch.tensor([0.0, 0.0, 1.5, 4.0])
    assert safe_divide(num, den).tolist() == [1.0, float("inf"), 2.0, 0.0]


# ---- agreement with the direct definitions --------------------------------------------------------


def _direct(model: nn.Module, x: torch.Tensor, ts, layer: str, inverse: bool = False) -> np.ndarray:
    """The full N x T activation matrix of one layer, [N, T, *unit], computed the obvious way."""
    acts = []
    module = dict(model.named_modules())[layer]
    for t in ts:
        seen: list[torch.Tensor] = []
        handle = module.register_forward_hook(lambda m, i, o, seen=seen: seen.append(o.detach()))
        with torch.no_grad():
            model(t(x))
        handle.remove()
        acts.append(t.inverse_on_map(seen[0]) if inverse else seen[0])
    return torch.stack(acts, dim=1).double().numpy()


def _average(values: np.ndarray) -> np.ndarray:
    return values.mean(axis=(1, 2)) if values.ndim == 3 else values


# The float32 forward itself differs by ~1e-7 between batch sizes (other conv kernels); the statistics
# on top are float64, so anything above that is a formula error.
RTOL = 1e-5


@pytest.mark.parametrize("average", [False, True])
def test_variances_equal_a_direct_numpy_computation(average):
    model, x, ts = _cnn(), _images(), make_transformation_set("rotation", steps=5)
    out = measure_invariances(
        model, x, ts, ["0", "3", "5"], VARIANCES, batch_size=3, average_feature_maps=average
    )
    for layer in ("0", "3", "5"):
        a = _direct(model, x, ts, layer)
        reduce = _average if average else (lambda v: v)
        tv = reduce(a.std(axis=1, ddof=1).mean(axis=0))
        sv = reduce(a.std(axis=0, ddof=1).mean(axis=0))
        np.testing.assert_allclose(out["transformation_variance"].per_unit[layer], tv, rtol=RTOL, atol=1e-9)
        np.testing.assert_allclose(out["sample_variance"].per_unit[layer], sv, rtol=RTOL, atol=1e-9)
        np.testing.assert_allclose(out["normalized_variance"].per_unit[layer], tv / sv, rtol=RTOL)
        assert out["normalized_variance"].per_layer[layer] == pytest.approx(float(np.mean(tv / sv)), rel=RTOL)


def test_same_equivariance_equals_the_variance_of_the_inverted_maps():
    model, x, ts = _cnn(), _images(), make_transformation_set("translation", steps=3)
    out = measure_invariance(model, x, ts, ["2"], "transformation_variance_same_equivariance", batch_size=4)
    a = _direct(model, x, ts, "2", inverse=True)
    np.testing.assert_allclose(out.per_unit["2"], _average(a.std(axis=1, ddof=1).mean(axis=0)), rtol=RTOL)


def test_anova_flags_the_units_scipy_finds_significant():
    model, x = _cnn(), _images(n=12)
    ts = make_transformation_set("brightness", low=0.3, high=1.0, steps=4)
    out = measure_invariance(model, x, ts, ["3"], "anova", average_feature_maps=False)
    a = _direct(model, x, ts, "3").reshape(12, 4, -1)
    p = np.array([scipy.stats.f_oneway(*a[:, :, u].T).pvalue for u in range(a.shape[2])])
    expected = (p < ANOVA_ALPHA / a.shape[2]).astype(float)
    assert expected.sum() > 0  # at least one rejection, so the comparison means something
    np.testing.assert_array_equal(out.per_unit["3"].reshape(-1), expected)


def test_results_do_not_depend_on_batch_size_or_on_tensor_versus_dataset():
    model, x, ts = _cnn(), _images(n=6), make_transformation_set("gamma", steps=3)
    ref = measure_invariance(model, x, ts, ["2"], batch_size=64).per_unit["2"]
    small = measure_invariance(model, x, ts, ["2"], batch_size=1).per_unit["2"]
    dataset = [{"image": img, "label": 0} for img in x]
    from_dataset = measure_invariance(model, dataset, ts, ["2"], batch_size=4).per_unit["2"]
    np.testing.assert_allclose(small, ref, rtol=RTOL)
    np.testing.assert_allclose(from_dataset, ref, rtol=RTOL)


def test_groups_give_per_group_results_and_an_exactly_merged_pool():
    model, x, ts = _cnn(), _images(n=8), make_transformation_set("contrast", steps=3)
    groups = ["H1", "H2", "H1", "H2", "H1", "H1", "H2", "H2"]
    out = measure_invariance(model, x, ts, ["0", "3"], groups=groups, batch_size=3)
    pooled = measure_invariance(model, x, ts, ["0", "3"])
    h2 = measure_invariance(model, x[[1, 3, 6, 7]], ts, ["0", "3"])
    assert set(out.groups) == {"H1", "H2"} and out.n_samples == 8 and out.groups["H2"].n_samples == 4
    for layer in ("0", "3"):
        np.testing.assert_allclose(out.per_unit[layer], pooled.per_unit[layer], rtol=RTOL)
        np.testing.assert_allclose(out.groups["H2"].per_unit[layer], h2.per_unit[layer], rtol=RTOL)


def test_rows_and_csv(tmp_path):
    out = measure_invariance(
        _cnn(),
        _images(n=4),
        make_transformation_set("brightness", steps=3),
        ["0", "5"],
        groups=["a", "a", "b", "b"],
    )
    rows = out.to_rows()
    assert [(r["group"], r["layer"], r["depth"]) for r in rows] == [
        ("all", "0", 0),
        ("all", "5", 1),
        ("a", "0", 0),
        ("a", "5", 1),
        ("b", "0", 0),
        ("b", "5", 1),
    ]
    assert rows[0]["units"] == 4 and rows[1]["units"] == 2 and rows[0]["value"] == out.per_layer["0"]
    path = out.to_csv(tmp_path / "inv.csv", per_unit=True)
    with path.open() as f:
        written = list(csv.DictReader(f))
    assert len(written) == 3 * (4 + 2) and written[0]["measure"] == "normalized_variance"


@pytest.mark.parametrize("name", MEASURES.names())
def test_contract_of_every_registered_measure(name):
    model, x, layers = _cnn(), _images(n=4), ["0", "2"]
    first = measure_invariance(model, x, _quarter_turns(), layers, name)
    again = measure_invariance(model, x, _quarter_turns(), layers, name)
    identity = measure_invariance(model, x, make_transformation_set("identity"), layers, name)
    assert first.measure == name and first.layers == layers and first.n_samples == 4
    for layer, channels in zip(layers, (4, 3), strict=True):
        values = first.per_unit[layer]
        assert values.shape == (channels,) and values.dtype == np.float64
        assert not np.isnan(values).any() and (values >= 0).all()
        np.testing.assert_array_equal(again.per_unit[layer], values)  # deterministic
        if not name.startswith("sample_variance"):
            assert (identity.per_unit[layer] == 0).all()  # nothing changes, nothing is measured


def test_vit_blocks_give_token_activations():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    vit = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2, num_classes=2
    ).eval()
    x = _images(n=3, channels=3, size=32)
    out = measure_invariances(
        vit, x, make_transformation_set("brightness", steps=3), ["blocks.0", "blocks.1"]
    )
    assert out["normalized_variance"].per_unit["blocks.1"].shape == (17, 192)  # class token + 4 x 4 patches
    assert np.isfinite(out["normalized_variance"].per_layer["blocks.1"])


# ---- bad input: clear errors before any forward pass ------------------------------------------------


def _fails_before_forward(match: str, **overrides) -> None:
    model = _Counting(_cnn())
    kwargs = dict(
        images=_images(n=4), transforms=make_transformation_set("rotation", steps=3), layers=["inner.0"]
    )
    kwargs.update(overrides)
    with pytest.raises(ConfigError, match=match):
        measure_invariance(model, **kwargs)
    assert model.calls == 0


def test_unknown_layer_lists_the_valid_ones():
    _fails_before_forward(
        r"unknown layer\(s\) 'inner.9' .*Valid: inner, inner.0, inner.1", layers=["inner.9"]
    )
    _fails_before_forward(r"did you mean 'inner.0'", layers=["inner0"])
    _fails_before_forward("'layers' is empty", layers=[])


def test_too_few_samples_or_transformations():
    _fails_before_forward("at least 2 samples.*got 1", images=_images(n=1))
    _fails_before_forward("at least 2 transformations.*got 1", transforms=[lambda x: x])
    _fails_before_forward(
        r"every group needs at least 2 samples; too few: 'b' \(1\)", groups=["a", "a", "a", "b"]
    )
    _fails_before_forward("'groups' has 3 labels for 4 samples", groups=["a", "a", "b"])


def test_a_transformation_that_changes_the_image_size():
    def half(x: torch.Tensor) -> torch.Tensor:
        return tF.interpolate(x, scale_factor=0.5)

    _fails_before_forward(
        r"transformation half\(1\) changes the images from \(1, 1, 12, 12\) to \(1, 1, 6, 6\)",
        transforms=[lambda x: x, half],
    )


def test_a_transformation_that_rejects_the_images():
    _fails_before_forward(
        r"transformation contrast\(0.6\) cannot be applied to images \(1, 2, 12, 12\)",
        images=_images(n=4, channels=2),
        transforms=make_transformation_set("contrast", steps=3),
    )


def test_same_equivariance_needs_spatial_sets_and_feature_maps():
    _fails_before_forward(
        "need spatial transformations.*brightness",
        transforms=make_transformation_set("brightness"),
        measure="normalized_variance_same_equivariance",
    )
    model = _Counting(_cnn())
    with pytest.raises(ConfigError, match=r"feature maps .*not maps: .*'inner.5': \(1, 2\)"):
        measure_invariance(
            model, _images(n=4), _quarter_turns(), ["inner.5"], "normalized_variance_same_equivariance"
        )
    assert model.calls == 1  # only the one-image probe that learns the layers' shapes


def test_unknown_measure_and_bad_batch_size():
    _fails_before_forward("unknown invariance measure 'variance'.*Valid: anova", measure="variance")
    _fails_before_forward("'batch_size' must be an integer >= 1", batch_size=0)


def test_default_layers_are_the_blocks_that_run_then_the_head():
    from medseg_weak.classify.model import Classifier
    from medseg_weak.config import QualityConfig
    from medseg_weak.invariance.layers import default_layers
    from medseg_weak.quality.model import QualityNet

    layers = default_layers(Classifier.create("tiny_cnn", 1, 4), torch.rand(2, 1, 32, 32))
    assert layers[0] == "backbone.body.0" and layers[-1] == "head"
    quality = QualityNet(
        QualityConfig(encoder="resnet18", encoder_depth=3, decoder_channels=(16, 8, 8)), 3, 2
    )
    layers = default_layers(quality, torch.rand(1, 3, 64, 64))
    assert "unet.encoder.layer4" not in layers  # held by smp at depth 3, never run
    assert layers[-2:] == ["unet.encoder.layer2", "unet.classification_head"]
