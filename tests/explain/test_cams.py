"""compute_cams: fast path == pytorch-grad-cam, registry contracts, hook hygiene, known-location maps."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_grad_cam as pgc
import torch
from pytorch_grad_cam.utils.image import scale_cam_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from medseg_weak.classify.backbones import create_backbone
from medseg_weak.classify.model import Classifier
from medseg_weak.errors import ConfigError, RegistryError
from medseg_weak.explain.cam_methods import CAM_METHODS, FAST_METHODS
from medseg_weak.explain.cams import (
    AUG_SMOOTH_VIEWS,
    compute_cams,
    finish_cams,
    scale_cams,
    vit_reshape_transform,
)

# Measured: fast path vs pytorch-grad-cam, max |diff| <= 1.5e-6 after resizing (float32 rounding in
# the reductions; torch bilinear interpolation is within 4e-7 of cv2.resize). The tolerance leaves room
# for other BLAS builds without hiding a formula error, which shows up as differences of 1e-2 or more.
ATOL = 1e-5
LIBRARY_CLASSES = {
    "gradcam": pgc.GradCAM,
    "gradcam++": pgc.GradCAMPlusPlus,
    "xgradcam": pgc.XGradCAM,
    "hirescam": pgc.HiResCAM,
    "layercam": pgc.LayerCAM,
    "gradcamelementwise": pgc.GradCAMElementWise,
}
HOOK_DICTS = ("_forward_hooks", "_backward_hooks", "_forward_pre_hooks", "_backward_pre_hooks")


def _classifier(backbone: str, seed: int = 0) -> Classifier:
    torch.manual_seed(seed)
    return Classifier.create(backbone, 1 if backbone == "tiny_cnn" else 3, 4).eval()


def _images(backbone: str, n: int, size: int = 64, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1 if backbone == "tiny_cnn" else 3, size, size, generator=gen)


def _hooks(model: nn.Module) -> int:
    return sum(len(getattr(m, name)) for m in model.modules() for name in HOOK_DICTS)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny models gain nothing from intra-op threads, and on a shared CPU their spin-waits made these
    # tests 10-100x slower; restored afterwards so other test modules keep their setting.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def models() -> dict[str, Classifier]:
    return {name: _classifier(name) for name in ("tiny_cnn", "resnet18")}


# ---- equality with pytorch-grad-cam ------------------------------------------------------------------


def test_fast_methods_are_the_gradient_methods():
    assert set(LIBRARY_CLASSES) == FAST_METHODS
    assert set(CAM_METHODS) >= FAST_METHODS


@pytest.mark.parametrize("method", sorted(FAST_METHODS))
def test_formula_equals_library_at_feature_resolution(method):
    """Same activations and gradients in, same raw and normalised CAM out, before any resizing."""
    gen = torch.Generator().manual_seed(0)
    acts = torch.relu(torch.randn(3, 16, 7, 5, generator=gen))
    grads = torch.randn(3, 16, 7, 5, generator=gen) * 1e-2
    grads[:, :4] = 0  # exercises Grad-CAM++'s zeroed alphas
    lib = LIBRARY_CLASSES[method](nn.Conv2d(1, 1, 1), [])  # no target layers: nothing hooked
    expected = lib.get_cam_image(None, None, None, acts.numpy(), grads.numpy(), False)
    ours = CAM_METHODS.get(method).fast(acts, grads)
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-5, atol=1e-7)
    expected_scaled = scale_cam_image(np.maximum(expected, 0))
    np.testing.assert_allclose(scale_cams(ours.clamp(min=0)).numpy(), expected_scaled, atol=1e-6)


@pytest.mark.parametrize("size", [(64, 64), (61, 47), (7, 5)])
def test_normalise_and_resize_match_scale_cam_image(size):
    raw = torch.randn(2, 7, 5, generator=torch.Generator().manual_seed(0))
    relu = np.maximum(raw.numpy(), 0)
    expected = scale_cam_image(scale_cam_image(relu, (size[1], size[0])))  # cv2 sizes are (w, h)
    np.testing.assert_allclose(finish_cams(raw, size).numpy(), expected, atol=1e-6)


TARGET_CASES = [(1, None), (3, 2), (3, [0, 3, 1])]


@pytest.mark.parametrize("backbone", ["tiny_cnn", "resnet18"])
@pytest.mark.parametrize("method", sorted(FAST_METHODS))
@pytest.mark.parametrize(("batch", "targets"), TARGET_CASES, ids=["b1-pred", "b3-int", "b3-per-image"])
def test_fast_path_equals_pytorch_grad_cam(models, backbone, method, batch, targets):
    model = models[backbone]
    x = _images(backbone, batch)
    ours = compute_cams(model, x, method=method, targets=targets, batch_size=2)
    ids = None if targets is None else ([targets] * batch if isinstance(targets, int) else targets)
    with LIBRARY_CLASSES[method](model, [model.cam_layer]) as cam:
        lib = cam(x, None if ids is None else [ClassifierOutputTarget(i) for i in ids])
    assert ours.shape == (batch, 64, 64)
    assert (ours.amax(dim=(1, 2)) > 0.5).any(), "a blank CAM would make the comparison vacuous"
    np.testing.assert_allclose(ours.numpy(), lib, atol=ATOL)


@pytest.mark.parametrize(
    ("backbone", "layer"),
    [("tiny_cnn", "4"), ("tiny_cnn", "2"), ("resnet18", "model.act1"), ("resnet18", "model.layer3")],
)
@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "layercam"])
def test_fast_path_at_intermediate_layers_equals_library(models, backbone, layer, method):
    model, x = models[backbone], _images(backbone, 3)
    fast = compute_cams(model, x, layer, method, targets=[0, 1, 2])
    lib = compute_cams(model, x, layer, method, targets=[0, 1, 2], fast=False)
    assert (fast.amax(dim=(1, 2)) > 0.5).any()
    torch.testing.assert_close(fast, lib, atol=ATOL, rtol=0)


def test_library_path_is_pytorch_grad_cam_bit_for_bit(models):
    model, x = models["tiny_cnn"], _images("tiny_cnn", 3)
    ours = compute_cams(model, x, method="gradcam++", targets=1, fast=False)
    with pgc.GradCAMPlusPlus(model, [model.cam_layer]) as cam:
        lib = cam(x, [ClassifierOutputTarget(1)] * 3)
    assert np.array_equal(ours.numpy(), lib)


# ---- contracts for every registered method -------------------------------------------------------------


@pytest.mark.parametrize("method", CAM_METHODS.names())
def test_every_method_meets_the_contract(method):
    model = _classifier("tiny_cnn").train()  # must come back in train mode, untouched
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = _images("tiny_cnn", 2, size=32)
    cams = compute_cams(model, x, method=method, targets=[1, 2])
    again = compute_cams(model, x, method=method, targets=[1, 2])
    assert cams.shape == (2, 32, 32)
    assert cams.dtype == torch.float32
    assert cams.device == next(model.parameters()).device
    assert torch.isfinite(cams).all()
    assert cams.min() >= 0 and cams.max() <= 1
    assert torch.equal(cams, again), "same call, same maps"
    assert _hooks(model) == 0
    assert all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items()), "BN statistics changed"


# ---- known location: the pointing game ------------------------------------------------------------


class SquareModel(nn.Module):
    """Class 1's logit is the mean of a channel lit only by bright pixels; class 0's, by dark pixels."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)
        self.pool = nn.Sequential(nn.ReLU(), nn.AvgPool2d(4))
        self.cam_layer = nn.Identity()
        self.head = nn.Linear(2, 2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
            self.conv.bias.copy_(torch.tensor([0.0, 0.5]))
            self.head.weight.copy_(torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
            self.head.bias.zero_()

    def cam_layers(self) -> dict[str, nn.Module]:
        return {"final": self.cam_layer}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.cam_layer(self.pool(self.conv(x)))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "library"])
@pytest.mark.parametrize("method", sorted(FAST_METHODS))
def test_cam_points_at_the_known_square(method, fast):
    square = torch.zeros(64, 64, dtype=torch.bool)
    square[8:24, 36:52] = True
    x = square.float()[None, None].repeat(2, 1, 1, 1)
    cams = compute_cams(SquareModel(), x, method=method, targets=[1, 0], fast=fast)
    hit = square.flatten()[cams.flatten(1).argmax(dim=1)]
    assert hit.tolist() == [True, False]  # class 1 points into the square, class 0 outside it
    assert cams[0][square].mean() > 5 * cams[0][~square].mean()


# ---- the fast path's autograd footprint ---------------------------------------------------------------


@pytest.mark.parametrize("layer", ["final", "4"])
def test_fast_path_records_nothing_before_the_target_layer(layer):
    model = _classifier("tiny_cnn")
    early, late = [], []
    first_conv = model.backbone.body[0][0]
    after = model.head if layer == "final" else model.backbone.body[5]
    handles = [
        first_conv.register_forward_hook(lambda m, i, o: early.append((torch.is_grad_enabled(), o.grad_fn))),
        after.register_forward_hook(lambda m, i, o: late.append(torch.is_grad_enabled())),
    ]
    try:
        compute_cams(model, _images("tiny_cnn", 2), layer, "gradcam", targets=1)
        assert early and all(not enabled and grad_fn is None for enabled, grad_fn in early)
        assert late and all(late), "autograd must be on after the target layer"
        assert all(p.grad is None for p in model.parameters())
        early.clear()
        compute_cams(model, _images("tiny_cnn", 2), layer, "gradcam", targets=1, fast=False)
        assert early[0][1] is not None, "the library path records the whole network (contrast)"
    finally:
        for handle in handles:
            handle.remove()
    assert torch.is_grad_enabled()


@pytest.mark.parametrize(("layer", "fast"), [("final", True), ("4", True), ("final", False)])
def test_works_inside_a_callers_no_grad_block(models, layer, fast):
    model, x = models["tiny_cnn"], _images("tiny_cnn", 2)
    expected = compute_cams(model, x, layer, targets=1, fast=fast)
    with torch.no_grad():
        assert torch.equal(compute_cams(model, x, layer, targets=1, fast=fast), expected)
        assert not torch.is_grad_enabled()


def test_existing_gradients_survive_both_paths(models):
    model = _classifier("tiny_cnn")
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    before = [p.grad for p in model.parameters()]
    for fast in (True, False):
        compute_cams(model, _images("tiny_cnn", 2), method="gradcam", fast=fast)
    assert all(p.grad is g and bool((g == 1).all()) for p, g in zip(model.parameters(), before))


def test_frozen_model_works_on_both_paths():
    model = _classifier("tiny_cnn").requires_grad_(False)
    x = _images("tiny_cnn", 2)
    fast = compute_cams(model, x, method="gradcam", targets=2)
    lib = compute_cams(model, x, method="gradcam", targets=2, fast=False)
    torch.testing.assert_close(fast, lib, atol=ATOL, rtol=0)


# ---- targets ------------------------------------------------------------------------------------------


def test_target_forms_agree(models):
    model, x = models["tiny_cnn"], _images("tiny_cnn", 3)
    as_list = compute_cams(model, x, targets=[2, 2, 2])
    for form in (2, torch.tensor(2), torch.tensor([2, 2, 2]), np.array([2, 2, 2]), (2, 2, 2)):
        assert torch.equal(compute_cams(model, x, targets=form), as_list)
    predicted = models["tiny_cnn"](x).argmax(dim=1)
    assert torch.equal(compute_cams(model, x), compute_cams(model, x, targets=predicted))


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "library"])
def test_bad_targets_raise_config_errors(models, fast):
    model, x = models["tiny_cnn"], _images("tiny_cnn", 2)
    with pytest.raises(ConfigError, match="out of range"):
        compute_cams(model, x, targets=7, fast=fast)
    with pytest.raises(ConfigError, match=">= 0"):
        compute_cams(model, x, targets=-1, fast=fast)
    with pytest.raises(ConfigError, match="3 classes for 2 images"):
        compute_cams(model, x, targets=[0, 1, 2], fast=fast)
    assert _hooks(model) == 0


# ---- errors and hook hygiene ----------------------------------------------------------------------------


def test_unknown_method_lists_the_registered_ones(models):
    with pytest.raises(RegistryError) as err:
        compute_cams(models["tiny_cnn"], _images("tiny_cnn", 1), method="gradcamm")
    assert "Did you mean 'gradcam'" in str(err.value)
    assert all(name in str(err.value) for name in CAM_METHODS.names())
    assert isinstance(err.value, ConfigError)


def test_unknown_layer_lists_the_valid_names(models):
    with pytest.raises(ConfigError, match=r"'layer9'\. Valid: final, 4, 2"):
        compute_cams(models["tiny_cnn"], _images("tiny_cnn", 1), target_layer="layer9")


class SharedReLU(nn.Module):
    """Uses one ReLU module twice and has no cam_layer: two ways to pick a target layer badly."""

    def __init__(self, bias: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1, bias=bias)
        self.relu = nn.ReLU()
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.relu(self.relu(self.conv(x))).mean(dim=(2, 3)))


def test_unusable_layers_and_models_say_why():
    model, x = SharedReLU(), torch.randn(1, 1, 8, 8)
    with pytest.raises(ConfigError, match="more than once per forward"):
        compute_cams(model, x, model.relu)
    with pytest.raises(ConfigError, match="no 'cam_layer'"):
        compute_cams(model, x)
    with pytest.raises(ConfigError, match="not called by the model's forward"):
        compute_cams(model, x, nn.ReLU())
    with pytest.raises(ConfigError, match="needs Conv2d or BatchNorm2d layers with a bias"):
        compute_cams(SharedReLU(bias=False), x, method="fullgrad")
    assert _hooks(model) == 0
    assert compute_cams(model, x, model.conv).shape == (1, 8, 8)


class FailingClassifier(Classifier):
    """Raises in the head from the ``fail_at``-th call on, i.e. after the target layer's hooks ran."""

    def __init__(self, fail_at: int) -> None:
        torch.manual_seed(0)
        super().__init__(create_backbone("tiny_cnn", 1), 4)
        self.fail_at, self.calls = fail_at, 0

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls >= self.fail_at:
            raise RuntimeError("boom")
        return super().forward_head(features)


@pytest.mark.parametrize(
    ("method", "layer", "fast", "fail_at"),
    [
        ("gradcam", "final", True, 1),  # forward_features / forward_head split
        ("gradcam", "4", True, 1),  # our forward hook
        ("gradcam", "final", False, 1),  # pytorch-grad-cam's hooks
        ("scorecam", "final", False, 2),  # fails inside the masked forward passes
        ("ablationcam", "final", False, 3),  # fails while the layer is swapped for an AblationLayer
        ("fullgrad", None, False, 1),  # hooks on every bias layer
    ],
)
def test_model_is_restored_after_an_exception(method, layer, fast, fail_at):
    model = FailingClassifier(fail_at).train()
    cam_layer = model.cam_layer
    with pytest.raises(RuntimeError, match="boom"):
        compute_cams(model, _images("tiny_cnn", 2, size=32), layer, method, targets=1, fast=fast)
    assert _hooks(model) == 0
    assert model.backbone.cam_layer is cam_layer
    assert all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    assert torch.is_grad_enabled()
    model.fail_at = 10**9
    assert compute_cams(model, _images("tiny_cnn", 1, size=32), layer, method, fast=fast).shape == (1, 32, 32)


def test_bad_arguments(models):
    model = models["tiny_cnn"]
    with pytest.raises(ConfigError, match="batch_size"):
        compute_cams(model, _images("tiny_cnn", 1), batch_size=0)
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        compute_cams(model, torch.zeros(1, 64, 64))
    assert compute_cams(model, _images("tiny_cnn", 0)).shape == (0, 64, 64)


# ---- test-time augmentation ---------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "fast"), [("gradcam", True), ("gradcam", False), ("eigencam", False)])
def test_aug_smooth_shape_and_range(models, method, fast):
    x = torch.randn(3, 1, 48, 40, generator=torch.Generator().manual_seed(0))
    cams = compute_cams(models["tiny_cnn"], x, method=method, fast=fast, aug_smooth=True, batch_size=2)
    assert cams.shape == (3, 48, 40) and cams.dtype == torch.float32
    assert cams.min() >= 0 and cams.max() <= 1 and torch.isfinite(cams).all()
    assert len(AUG_SMOOTH_VIEWS) == 8


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "library"])
def test_aug_smooth_is_mirror_symmetric_for_a_mirror_symmetric_image(models, fast):
    half = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(3))
    x = half + half.flip(-1)
    model = models["tiny_cnn"]
    plain = compute_cams(model, x, targets=1, fast=fast)
    smooth = compute_cams(model, x, targets=1, fast=fast, aug_smooth=True)
    assert (plain - plain.flip(-1)).abs().max() > 0.05, "the model itself is not symmetric"
    assert smooth.max() > 0.5
    torch.testing.assert_close(smooth, smooth.flip(-1), atol=1e-5, rtol=0)


# ---- ViT-style tokens ------------------------------------------------------------------------------------


class TinyTokenModel(nn.Module):
    """Patch tokens [B, N, C] with a class token; no forward_features, so the fast path uses its hook."""

    def __init__(self, patch: int = 8, dim: int = 8, classes: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Conv2d(1, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.block = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU())
        self.cam_layer = nn.Identity()
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(len(tokens), -1, -1), tokens], dim=1)
        tokens = self.cam_layer(tokens + self.block(tokens))
        return self.head(tokens.mean(dim=1))


@pytest.mark.parametrize("method", ["gradcam", "hirescam", "gradcam++"])
def test_vit_tokens_with_reshape_transform(method):
    model = TinyTokenModel().eval()
    x = torch.randn(2, 1, 32, 24, generator=torch.Generator().manual_seed(0))  # a 4 x 3 token grid
    reshape = vit_reshape_transform(4, 3)
    fast = compute_cams(model, x, method=method, targets=[0, 2], reshape_transform=reshape)
    lib = compute_cams(model, x, method=method, targets=[0, 2], reshape_transform=reshape, fast=False)
    assert fast.shape == (2, 32, 24) and (fast.amax(dim=(1, 2)) > 0.5).all()
    torch.testing.assert_close(fast, lib, atol=ATOL, rtol=0)
    inferred = compute_cams(
        model, x, method=method, targets=[0, 2], reshape_transform=vit_reshape_transform(width=3)
    )
    assert torch.equal(inferred, fast)
    assert _hooks(model) == 0


def test_vit_tokens_without_reshape_transform_say_what_to_do():
    with pytest.raises(ConfigError, match="vit_reshape_transform"):
        compute_cams(TinyTokenModel().eval(), torch.zeros(1, 1, 32, 24))


def test_vit_reshape_transform_grid():
    tokens = torch.arange(2 * 17 * 5, dtype=torch.float32).reshape(2, 17, 5)
    grid = vit_reshape_transform()(tokens)  # 16 patch tokens -> 4 x 4
    assert grid.shape == (2, 5, 4, 4)
    assert torch.equal(grid[1, :, 2, 3], tokens[1, 1 + 2 * 4 + 3])
    with pytest.raises(ConfigError, match="do not form a 3x5 grid"):
        vit_reshape_transform(3, 5)(tokens)


# ---- GPU -----------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fast_path_stays_on_the_device_and_matches_library():
    model = _classifier("resnet18").cuda()
    x = _images("resnet18", 3)
    fast = compute_cams(model, x, targets=[0, 1, 2])
    lib = compute_cams(model, x, targets=[0, 1, 2], fast=False)
    assert fast.device.type == "cuda" and lib.device.type == "cuda"
    torch.testing.assert_close(fast, lib, atol=1e-4, rtol=0)  # TF32 / cuDNN reductions differ more


def test_package_exports_the_cam_api():
    import medseg_weak.explain as explain

    assert explain.compute_cams is compute_cams and explain.CAM_METHODS is CAM_METHODS
    assert explain.FAST_METHODS == FAST_METHODS and explain.vit_reshape_transform is vit_reshape_transform


@pytest.mark.parametrize("fast", [True, False])
def test_fixed_batches_make_a_cam_independent_of_its_call(models, fast):
    """With ``fixed_batches`` an image explained alone, last in a short chunk or inside a full batch
    gets the same float16 bytes (what a resumed CAM run stores). Without it, CPU kernels here round
    a 1-image forward differently from a 4-image one, which is how a resume once changed a file."""
    model = models["tiny_cnn"]
    images = _images("tiny_cnn", 7, seed=5)

    def stored(x: torch.Tensor) -> np.ndarray:
        cams = compute_cams(model, x, targets=2, batch_size=4, fast=fast, fixed_batches=True)
        return cams.numpy().astype(np.float16).view(np.uint16)

    whole = stored(images)  # chunks of 4 and 3 (padded to 4)
    assert whole.shape == (7, 64, 64)
    for i in range(7):
        assert np.array_equal(stored(images[i : i + 1])[0], whole[i]), i
    assert np.array_equal(stored(images[1:]), whole[1:])  # a resumed run: every pairing shifted
