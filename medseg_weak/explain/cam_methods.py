"""The CAM method table: for each method name, its pytorch-grad-cam class and (if any) its fast formula.

One responsibility: say *what* each method computes. ``cams.py`` and its two paths (``fast_cam.py``,
``library_cam.py``) decide *how* it runs (batching, hooks, resizing). A fast formula is a pure
function ``(activations, gradients) -> raw CAM`` on ``[B, C, h, w]`` tensors, returning ``[B, h, w]``
before the ReLU, and replicates pytorch-grad-cam's ``get_cam_weights`` / ``get_cam_image`` exactly
(same epsilons, same order), so the fast path and the library give the same maps (tested in
``tests/explain/test_cams.py``).

Left out of the registry, on purpose:

* ``RefineCAM``: a multi-layer meta-method (product of per-layer CAMs); our API takes one target layer,
  and with one layer it is GradCAM++ re-normalised.
* ``DeepFeatureFactorization``: returns concept maps and concept scores, not one map per class.
* ``GuidedBackpropReLUModel``: a pixel-level gradient, not a CAM, and it swaps the model's ReLUs.
* ``sobel_cam``: an edge map of the image; it never looks at the model.
* ``AblationLayerVit`` / ``AblationLayerFasterRCNN`` and ``FasterRCNNBoxScoreTarget``: detection and
  ViT-ablation specifics (ViT models still work with every method through ``reshape_transform``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytorch_grad_cam as pgc
import torch
from pytorch_grad_cam.ablation_layer import AblationLayer
from pytorch_grad_cam.utils.find_layers import find_layer_predicate_recursive
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget, FinerWeightedTarget
from torch import nn

from medseg_weak.errors import ConfigError
from medseg_weak.registry import Registry

FastFormula = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# (model, target_layers, reshape_transform, batch_size) -> a pytorch-grad-cam object
LibraryFactory = Callable[[nn.Module, list[nn.Module], Callable | None, int], Any]
# (model, images, class ids or None) -> the pytorch-grad-cam targets (None: the library picks the argmax)
TargetFactory = Callable[[nn.Module, torch.Tensor, Sequence[int] | None], list | None]


def _spatial(x: torch.Tensor) -> tuple[int, ...]:
    return tuple(range(2, x.ndim))


def _expand(weights: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return weights.reshape(weights.shape + (1,) * (like.ndim - 2))


# ---- fast formulas (pytorch-grad-cam's numpy code, written for torch tensors) -------------------------


def gradcam_image(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM: channel weights = the spatial mean of the gradients."""
    return (_expand(grads.mean(dim=_spatial(grads)), acts) * acts).sum(dim=1)


def gradcam_plusplus_image(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++: eq. 19 of arXiv:1710.11063 with pytorch-grad-cam's eps (1e-6) and zeroed alphas."""
    grads_2 = grads**2
    grads_3 = grads_2 * grads
    sum_acts = _expand(acts.sum(dim=_spatial(acts)), acts)
    aij = grads_2 / (2 * grads_2 + sum_acts * grads_3 + 1e-6)
    aij = torch.where(grads != 0, aij, torch.zeros_like(aij))
    weights = (grads.clamp(min=0) * aij).sum(dim=_spatial(grads))
    return (_expand(weights, acts) * acts).sum(dim=1)


def xgradcam_image(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """XGrad-CAM: weights = sum(grads * acts) / (sum(acts) + 1e-7) per channel."""
    sum_acts = _expand(acts.sum(dim=_spatial(acts)), acts)
    weights = (grads * acts / (sum_acts + 1e-7)).sum(dim=_spatial(acts))
    return (_expand(weights, acts) * acts).sum(dim=1)


def hirescam_image(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """HiResCAM: element-wise gradients x activations, summed over channels (no spatial averaging)."""
    return (grads * acts).sum(dim=1)


def layercam_image(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """LayerCAM: positive gradients x activations, summed over channels."""
    return (grads.clamp(min=0) * acts).sum(dim=1)


def gradcam_elementwise_image(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM element-wise: ReLU of gradients x activations, summed over channels."""
    return (grads * acts).clamp(min=0).sum(dim=1)


# ---- library factories and targets -------------------------------------------------------------------


def _plain(cls: type) -> LibraryFactory:
    def build(model: nn.Module, layers: list[nn.Module], reshape: Callable | None, batch_size: int) -> Any:
        return cls(model, layers, reshape_transform=reshape)

    return build


def _scorecam(model: nn.Module, layers: list[nn.Module], reshape: Callable | None, batch_size: int) -> Any:
    cam = pgc.ScoreCAM(model, layers, reshape_transform=reshape)
    cam.batch_size = batch_size  # ScoreCAM reads this attribute for its masked-input forward passes
    return cam


def _ablationcam(model: nn.Module, layers: list[nn.Module], reshape: Callable | None, batch_size: int) -> Any:
    # A fresh AblationLayer per call: the library's default argument is one shared module instance
    # that keeps the last call's activations alive (and its state) across every AblationCAM object.
    return pgc.AblationCAM(
        model, layers, reshape_transform=reshape, ablation_layer=AblationLayer(), batch_size=batch_size
    )


def _has_2d_bias(layer: nn.Module) -> bool:
    # The same predicate as pytorch-grad-cam's FullGrad (exact types, as it checks them).
    return type(layer) in (nn.Conv2d, nn.BatchNorm2d) and getattr(layer, "bias", None) is not None


def _fullgrad(model: nn.Module, layers: list[nn.Module], reshape: Callable | None, batch_size: int) -> Any:
    if not find_layer_predicate_recursive(model, _has_2d_bias):
        raise ConfigError(
            "CAM method 'fullgrad' needs Conv2d or BatchNorm2d layers with a bias (it sums bias-gradient "
            f"maps over all of them); '{type(model).__name__}' has none. Use another method."
        )
    # FullGrad ignores target layers (it hooks every bias layer) and prints a warning if given any.
    return pgc.FullGrad(model, [], reshape_transform=reshape)


def _sess(model: nn.Module, layers: list[nn.Module], reshape: Callable | None, batch_size: int) -> Any:
    return pgc.SESS(model, layers, reshape_transform=reshape, batch_size=batch_size)


def classifier_targets(
    model: nn.Module, images: torch.Tensor, class_ids: Sequence[int] | None
) -> list | None:
    """One ``ClassifierOutputTarget`` per image (``None``: pytorch-grad-cam uses the predicted class)."""
    return None if class_ids is None else [ClassifierOutputTarget(int(c)) for c in class_ids]


def finer_targets(
    model: nn.Module, images: torch.Tensor, class_ids: Sequence[int] | None, alpha: float = 1.0
) -> list:
    """Finer-CAM targets: the class against the (up to) three classes whose logits are closest to it.

    FinerCAM builds these itself only for one class shared by the whole batch; doing it here gives
    per-image classes. For ordinal density grades the closest classes are usually the neighbours, so
    the map shows what separates D from C rather than what makes an image a mammogram.
    """
    with torch.no_grad():
        logits = model(images)
    ids = logits.argmax(dim=1).tolist() if class_ids is None else [int(c) for c in class_ids]
    targets = []
    for i, main in enumerate(ids):
        order = (logits[i] - logits[i, main]).abs().argsort().tolist()
        others = [c for c in order if c != main][:3]
        targets.append(FinerWeightedTarget(main, others, alpha))
    return targets


def _finercam(model: nn.Module, layers: list[nn.Module], reshape: Callable | None, batch_size: int) -> Any:
    return pgc.FinerCAM(model, layers, reshape_transform=reshape)


# ---- the table ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CamMethod:
    """How to compute one CAM method.

    ``library`` builds the pytorch-grad-cam object; ``fast`` is the formula for our fast path (None:
    library only); ``uses_gradients`` False lets the library path run under ``torch.no_grad()``;
    ``uses_target_layer`` False for methods that choose their own layers (FullGrad).
    """

    name: str
    library: LibraryFactory
    fast: FastFormula | None = None
    uses_gradients: bool = True
    uses_target_layer: bool = True
    targets: TargetFactory = classifier_targets


CAM_METHODS: Registry[CamMethod] = Registry("CAM method")


def _register(method: CamMethod) -> None:
    CAM_METHODS.register(method.name)(method)


_register(CamMethod("gradcam", _plain(pgc.GradCAM), gradcam_image))
_register(CamMethod("gradcam++", _plain(pgc.GradCAMPlusPlus), gradcam_plusplus_image))
_register(CamMethod("xgradcam", _plain(pgc.XGradCAM), xgradcam_image))
_register(CamMethod("hirescam", _plain(pgc.HiResCAM), hirescam_image))
_register(CamMethod("layercam", _plain(pgc.LayerCAM), layercam_image))
_register(CamMethod("gradcamelementwise", _plain(pgc.GradCAMElementWise), gradcam_elementwise_image))
_register(CamMethod("eigengradcam", _plain(pgc.EigenGradCAM)))
_register(CamMethod("segeigencam", _plain(pgc.SegEigenCAM)))
_register(CamMethod("shapleycam", _plain(pgc.ShapleyCAM)))
_register(CamMethod("finercam", _finercam, targets=finer_targets))
_register(CamMethod("sess", _sess))
_register(CamMethod("fullgrad", _fullgrad, uses_target_layer=False))
# RandomCAM draws its weights after a backward pass it does not use; kept as the sanity baseline.
_register(CamMethod("randomcam", _plain(pgc.RandomCAM)))
_register(CamMethod("eigencam", _plain(pgc.EigenCAM), uses_gradients=False))
_register(CamMethod("kpcacam", _plain(pgc.KPCA_CAM), uses_gradients=False))
_register(CamMethod("fem", _plain(pgc.FEM), uses_gradients=False))
_register(CamMethod("scorecam", _scorecam, uses_gradients=False))
_register(CamMethod("ablationcam", _ablationcam, uses_gradients=False))

#: Methods with a fast path (derived from the table, so there is one source of truth).
FAST_METHODS: frozenset[str] = frozenset(name for name in CAM_METHODS if CAM_METHODS.get(name).fast)
