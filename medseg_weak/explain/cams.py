"""compute_cams: batched class activation maps for a classifier, as tensors on the model's device.

One responsibility: run a method from :data:`~medseg_weak.explain.cam_methods.CAM_METHODS` over a
batch of images and return ``[B, H, W]`` float32 maps in [0, 1], leaving the model exactly as it was.
This module resolves the arguments (layer, targets, device) and picks the path:

* **Fast path** (methods in ``FAST_METHODS``, ``fast=True``): :mod:`~medseg_weak.explain.fast_cam`,
  which differentiates only what comes after the target layer.
* **Library path** (every other method, or ``fast=False``): pytorch-grad-cam itself, through
  :mod:`~medseg_weak.explain.library_cam`.

Both give the same maps (tested to ~1e-6), both run inside the model guard of
:mod:`~medseg_weak.explain.guard`, and ``aug_smooth`` wraps either in :mod:`~medseg_weak.explain.tta`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from medseg_weak.errors import ConfigError
from medseg_weak.explain.cam_methods import CAM_METHODS, FAST_METHODS
from medseg_weak.explain.cam_scaling import finish_cams, scale_cams
from medseg_weak.explain.fast_cam import fast_cams
from medseg_weak.explain.guard import model_state_restored
from medseg_weak.explain.library_cam import library_cams
from medseg_weak.explain.reshape import ReshapeTransform, vit_reshape_transform
from medseg_weak.explain.tta import AUG_SMOOTH_VIEWS, AugView, smooth_over_views

__all__ = [
    "AUG_SMOOTH_VIEWS",
    "CAM_METHODS",
    "FAST_METHODS",
    "AugView",
    "compute_cams",
    "finish_cams",
    "resolve_target_layer",
    "scale_cams",
    "vit_reshape_transform",
]

Targets = torch.Tensor | Sequence[int] | int | None


def compute_cams(
    model: nn.Module,
    images: torch.Tensor,
    target_layer: nn.Module | str | None = None,
    method: str = "gradcam",
    targets: Targets = None,
    batch_size: int = 32,
    fast: bool = True,
    aug_smooth: bool = False,
    reshape_transform: ReshapeTransform | None = None,
    fixed_batches: bool = False,
) -> torch.Tensor:
    """CAMs of ``images`` ``[B, C, H, W]``: ``[B, H, W]`` float32 in [0, 1] on the model's device.

    ``target_layer``: a module, a name from ``model.cam_layers()``, or None for ``model.cam_layer``.
    ``targets``: None = each image's predicted class; an int = that class for every image (e.g. the
    densest class for dense-tissue pseudo-masks); a sequence / tensor = one class per image.
    ``fast``: use the fast path when the method has one (see the module docstring).
    ``aug_smooth``: average the CAMs of :data:`AUG_SMOOTH_VIEWS` (flips and rescalings, mapped back)
    and re-normalise; ``len(AUG_SMOOTH_VIEWS)`` times the cost.
    ``reshape_transform``: maps the target layer's output (and its gradient) to ``[B, C, h, w]``, e.g.
    :func:`vit_reshape_transform` for ViT tokens ``[B, N, C]``.
    ``fixed_batches``: every forward takes exactly ``batch_size`` images (the last chunk padded with
    copies of its last image, whose CAMs are dropped). CPU convolution kernels round differently at
    different batch sizes (one float16 step after the CAM is stored), so only then is an image's CAM
    independent of how many images shared its call: a resumed run must end byte-identical.
    """
    spec = CAM_METHODS.get(method)
    if batch_size < 1:
        raise ConfigError(f"'batch_size' must be at least 1; got {batch_size}")
    if images.ndim != 4:
        raise ValueError(f"images must be [B, C, H, W]; got shape {tuple(images.shape)}")
    device = _model_device(model, images)
    images = images.to(device)
    if not images.is_floating_point():
        images = images.float()
    layer = (
        resolve_target_layer(model, target_layer)
        if spec.uses_target_layer or target_layer is not None
        else None
    )
    class_ids = _resolve_targets(targets, images.shape[0])
    n = images.shape[0]
    if n == 0:
        return torch.zeros(n, *images.shape[-2:], device=device)
    if fixed_batches and n % batch_size:
        pad = batch_size - n % batch_size
        images = torch.cat([images, images[-1:].expand(pad, *images.shape[1:])])
        if class_ids is not None:
            class_ids = torch.cat([class_ids, class_ids[-1:].expand(pad)])

    run: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]
    if fast and spec.fast is not None:
        assert layer is not None  # every fast method uses a target layer
        run = functools.partial(
            fast_cams,
            model,
            layer=layer,
            formula=spec.fast,
            reshape=reshape_transform,
            batch_size=batch_size,
        )
    else:
        run = functools.partial(
            library_cams, model, layer=layer, spec=spec, reshape=reshape_transform, batch_size=batch_size
        )
    with model_state_restored(model):
        model.eval()
        if not aug_smooth:
            return run(images, class_ids)[:n]
        if class_ids is None:  # one class per image for every view, not a per-view argmax
            class_ids = _predict(model, images, batch_size)
        return smooth_over_views(run, images, class_ids)[:n]


def resolve_target_layer(model: nn.Module, target_layer: nn.Module | str | None) -> nn.Module:
    """The module to explain: itself, ``model.cam_layers()[name]``, or ``model.cam_layer`` for None."""
    if isinstance(target_layer, nn.Module):
        return target_layer
    if target_layer is None:
        layer = getattr(model, "cam_layer", None)
        if not isinstance(layer, nn.Module):
            raise ConfigError(
                f"'{type(model).__name__}' has no 'cam_layer'; pass target_layer= a module of the model"
            )
        return layer
    if isinstance(target_layer, str):
        cam_layers = getattr(model, "cam_layers", None)
        layers: dict[str, nn.Module] = cam_layers() if callable(cam_layers) else {}
        if target_layer in layers:
            return layers[target_layer]
        valid = ", ".join(layers) or f"none ('{type(model).__name__}' defines no cam_layers())"
        raise ConfigError(f"unknown CAM target layer '{target_layer}'. Valid: {valid}")
    raise TypeError(f"target_layer must be a module, a layer name or None; got {type(target_layer).__name__}")


def _model_device(model: nn.Module, images: torch.Tensor) -> torch.device:
    param = next(model.parameters(), None)
    return images.device if param is None else param.device


def _resolve_targets(targets: Targets, n: int) -> torch.Tensor | None:
    """None, or a CPU int64 tensor with one class per image."""
    if targets is None:
        return None
    if isinstance(targets, bool):
        raise ConfigError(f"'targets' must be a class index or one per image; got {targets!r}")
    if isinstance(targets, torch.Tensor | np.ndarray) and targets.ndim == 0:
        targets = int(targets.item())
    if isinstance(targets, int | np.integer):
        ids = torch.full((n,), int(targets), dtype=torch.long)
    else:
        ids = torch.as_tensor(targets).detach().cpu().long().reshape(-1)
        if ids.numel() != n:
            raise ConfigError(f"'targets' has {ids.numel()} classes for {n} images")
    if (ids < 0).any():
        raise ConfigError(f"'targets' must be class indices >= 0; got {ids.tolist()}")
    return ids


def _predict(model: nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    with torch.no_grad():
        ids = [model(images[s : s + batch_size]).argmax(dim=1) for s in range(0, images.shape[0], batch_size)]
    return torch.cat(ids).cpu()
