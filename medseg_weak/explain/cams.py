"""compute_cams: batched class activation maps for a classifier, as tensors on the model's device.

One responsibility: run a method from :data:`~medseg_weak.explain.cam_methods.CAM_METHODS` over a
batch of images and return ``[B, H, W]`` float32 maps in [0, 1], leaving the model exactly as it was.

Two paths give the same maps (tested to ~1e-6):

* **Fast path** (methods in ``FAST_METHODS``, ``fast=True``): only the part of the network *after* the
  target layer is recorded for autograd, and ``torch.autograd.grad(score, activation)`` stops at the
  target layer (DESIGN §4): no parameter gradients, no backward through the backbone, no numpy.
  For the model's ``cam_layer`` this uses the ``forward_features`` / ``forward_head`` split; for any
  other layer a forward hook turns the layer's output into a fresh leaf and switches autograd on from
  there (everything before it ran under ``torch.no_grad()``).
* **Library path** (every other method, or ``fast=False``): pytorch-grad-cam itself.

Whatever happens, even when the model raises mid-call, the model leaves with the hooks, submodules,
parameter ``.grad`` and train/eval flags it came with (pytorch-grad-cam issues #78, #132, #195, #483):
the library's own ``with`` block is not used because its ``__exit__`` swallows ``IndexError``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medseg_weak.errors import ConfigError
from medseg_weak.explain.cam_methods import CAM_METHODS, FAST_METHODS, CamMethod, FastFormula

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
ReshapeTransform = Callable[[torch.Tensor], torch.Tensor]


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
    if images.shape[0] == 0:
        return torch.zeros(images.shape[0], *images.shape[-2:], device=device)

    run: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]
    if fast and spec.fast is not None:
        assert layer is not None  # every fast method uses a target layer
        run = functools.partial(
            _fast_cams,
            model,
            layer=layer,
            formula=spec.fast,
            reshape=reshape_transform,
            batch_size=batch_size,
        )
    else:
        run = functools.partial(
            _library_cams, model, layer=layer, spec=spec, reshape=reshape_transform, batch_size=batch_size
        )
    with _model_state_restored(model):
        model.eval()
        if not aug_smooth:
            return run(images, class_ids)
        if class_ids is None:  # one class per image for every view, not a per-view argmax
            class_ids = _predict(model, images, batch_size)
        return _aug_smooth(run, images, class_ids)


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


# ---- pytorch-grad-cam's normalisation, on tensors ---------------------------------------------------


def scale_cams(cams: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """pytorch-grad-cam's ``scale_cam_image`` for ``[B, h, w]`` on any device.

    Per map: subtract the min, divide by ``1e-7 + max``, then resize bilinearly (half-pixel centres,
    as cv2's ``INTER_LINEAR``; measured within 4e-7 of ``cv2.resize`` on float32 maps).
    """
    cams = cams - cams.flatten(1).min(dim=1).values[:, None, None]
    cams = cams / (1e-7 + cams.flatten(1).max(dim=1).values[:, None, None])
    if size is not None and tuple(cams.shape[-2:]) != tuple(size):
        cams = F.interpolate(cams[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    return cams


def finish_cams(raw: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Raw ``[B, h, w]`` CAMs -> final maps, in pytorch-grad-cam's order for one target layer.

    ``compute_cam_per_layer`` (ReLU, normalise, resize) then ``aggregate_multi_layers`` (ReLU, mean
    over the one layer, normalise again): the second normalisation is kept so the maps match exactly.
    """
    cams = scale_cams(raw.clamp(min=0), size)
    return scale_cams(cams.clamp(min=0))


# ---- fast path ----------------------------------------------------------------------------------------


def _fast_cams(
    model: nn.Module,
    images: torch.Tensor,
    class_ids: torch.Tensor | None,
    *,
    layer: nn.Module,
    formula: FastFormula,
    reshape: ReshapeTransform | None,
    batch_size: int,
) -> torch.Tensor:
    size = (images.shape[-2], images.shape[-1])
    out = torch.empty(images.shape[0], *size, dtype=torch.float32, device=images.device)
    split_at_head = (
        layer is getattr(model, "cam_layer", None)
        and callable(getattr(model, "forward_features", None))
        and callable(getattr(model, "forward_head", None))
    )
    for start in range(0, images.shape[0], batch_size):
        x = images[start : start + batch_size]
        if split_at_head:
            with torch.no_grad():
                features = model.forward_features(x)
            acts = features.detach().requires_grad_()
            with torch.enable_grad():
                logits = model.forward_head(acts)
        else:
            with torch.no_grad(), _GradientFrom(layer) as split:
                logits = model(x)
            acts = split.activation
        ids = _class_ids_for(logits, None if class_ids is None else class_ids[start : start + x.shape[0]])
        if not logits.requires_grad:
            raise ConfigError(
                f"'{type(model).__name__}' returns logits that do not depend on the target layer"
            )
        with torch.enable_grad():  # the caller may be inside torch.no_grad()
            score = logits.gather(1, ids[:, None]).sum()
            (grads,) = torch.autograd.grad(score, acts, allow_unused=True)
        if grads is None:
            raise ConfigError(f"the logits of '{type(model).__name__}' do not depend on the target layer")
        with torch.no_grad():
            a, g = acts.detach(), grads
            if reshape is not None:
                a, g = reshape(a), reshape(g)
            _check_grid(a)
            out[start : start + x.shape[0]] = finish_cams(formula(a, g).float(), size)
    return out


class _GradientFrom:
    """Forward hook making the target layer's output the start of the autograd graph.

    The forward runs under ``torch.no_grad()``; at the target layer the hook detaches the output into a
    leaf that requires grad and switches autograd on for the rest of the forward (the caller's
    ``no_grad`` block restores the previous mode when it exits). The leaf is returned as a clone, so
    an in-place op after the layer (``ReLU(inplace=True)``) neither fails on a leaf nor changes the
    recorded activation.
    """

    def __init__(self, layer: nn.Module) -> None:
        self.layer = layer
        self._activation: torch.Tensor | None = None
        self._handle: Any = None

    @property
    def activation(self) -> torch.Tensor:
        if self._activation is None:
            raise ConfigError(
                f"the CAM target layer ({type(self.layer).__name__}) was not called by the model's forward"
            )
        return self._activation

    def __enter__(self) -> _GradientFrom:
        self._handle = self.layer.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.remove()

    def _hook(self, module: nn.Module, inputs: Any, output: Any) -> torch.Tensor:
        if self._activation is not None:
            raise ConfigError(
                f"the CAM target layer ({type(module).__name__}) runs more than once per forward pass "
                "(a shared module); pick a layer that runs once"
            )
        if not isinstance(output, torch.Tensor):
            raise ConfigError(f"the CAM target layer ({type(module).__name__}) must return a tensor")
        self._activation = output.detach().requires_grad_()
        torch.set_grad_enabled(True)
        return self._activation.clone()


# ---- library path -------------------------------------------------------------------------------------


def _library_cams(
    model: nn.Module,
    images: torch.Tensor,
    class_ids: torch.Tensor | None,
    *,
    layer: nn.Module | None,
    spec: CamMethod,
    reshape: ReshapeTransform | None,
    batch_size: int,
) -> torch.Tensor:
    out = torch.empty(images.shape[0], *images.shape[-2:], dtype=torch.float32, device=images.device)
    cam = spec.library(model, [] if layer is None else [layer], reshape, batch_size)
    try:
        for start in range(0, images.shape[0], batch_size):
            x = images[start : start + batch_size]
            ids = None if class_ids is None else class_ids[start : start + x.shape[0]].tolist()
            targets = spec.targets(model, x, ids)
            # An input that requires grad keeps the gradient methods working on a frozen model.
            x = x.detach().requires_grad_(spec.uses_gradients)
            grad_mode = torch.enable_grad() if spec.uses_gradients else torch.no_grad()
            try:
                with grad_mode, _numpy_seed(start):
                    result = cam(x, targets)
            except IndexError as err:
                if ids is None:
                    raise
                raise ConfigError(f"a target class is out of range for the model's outputs: {err}") from err
            out[start : start + x.shape[0]] = torch.as_tensor(np.asarray(result, dtype=np.float32)).to(
                out.device
            )
    finally:
        _release(cam)
    return out


def _release(cam: Any) -> None:
    """Drop the library object's hooks and stored tensors (the model guard would remove the hooks too)."""
    for obj in (cam, getattr(cam, "base_cam", None)):
        recorder = getattr(obj, "activations_and_grads", None)
        if recorder is not None:
            recorder.release()


@contextmanager
def _numpy_seed(seed: int) -> Iterator[None]:
    # RandomCAM and KPCA-CAM (arpack start vector) draw from numpy's global RNG: a fixed seed makes
    # them deterministic, and restoring the state leaves the caller's random stream untouched.
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


# ---- model state guard --------------------------------------------------------------------------------

_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
)


@contextmanager
def _model_state_restored(model: nn.Module) -> Iterator[None]:
    """Give the model back with its hooks, submodules, ``.grad`` and train/eval flags as they were.

    pytorch-grad-cam can leave state behind when something raises: AblationCAM swaps the target layer
    for an AblationLayer and swaps it back only on success, registers a hook it removes only on
    success, and every gradient method's ``backward()`` overwrites parameter ``.grad``. Restoring a
    snapshot covers all of them, whichever method ran. Each submodule's own train flag is restored
    (not ``model.train(mode)``), so a partly frozen model stays partly frozen.
    """
    modules = list(model.modules())
    training = [m.training for m in modules]
    children = [(m, dict(m._modules)) for m in modules]
    hooks = [(m, {name: set(getattr(m, name, {})) for name in _HOOK_DICTS}) for m in modules]
    params = list(model.parameters())
    grads = [p.grad for p in params]
    try:
        yield
    finally:
        for parent, kids in children:
            for name, child in kids.items():
                if parent._modules.get(name) is not child:
                    parent._modules[name] = child
        for module, before in hooks:
            for name, keys in before.items():
                registered = getattr(module, name, None)
                if registered is None:
                    continue
                for key in [k for k in registered if k not in keys]:
                    del registered[key]
        for param, grad in zip(params, grads):
            param.grad = grad
        for module, flag in zip(modules, training):
            module.training = flag


# ---- targets, devices, checks ---------------------------------------------------------------------------


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


def _class_ids_for(logits: torch.Tensor, ids: torch.Tensor | None) -> torch.Tensor:
    if logits.ndim != 2:
        raise ConfigError(f"CAMs need [B, classes] logits; the model returned shape {tuple(logits.shape)}")
    if ids is None:
        return logits.argmax(dim=1)
    if int(ids.max()) >= logits.shape[1]:
        raise ConfigError(f"target class {int(ids.max())} is out of range for {logits.shape[1]} classes")
    return ids.to(logits.device)


def _check_grid(acts: torch.Tensor) -> None:
    if acts.ndim != 4:
        raise ConfigError(
            f"the CAM target layer gives activations of shape {tuple(acts.shape)}; 2D CAMs need "
            "[B, C, h, w]. For ViT-style tokens [B, N, C] pass reshape_transform=vit_reshape_transform(h, w)"
        )


def _predict(model: nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    with torch.no_grad():
        ids = [model(images[s : s + batch_size]).argmax(dim=1) for s in range(0, images.shape[0], batch_size)]
    return torch.cat(ids).cpu()


# ---- test-time augmentation smoothing ----------------------------------------------------------------


@dataclass(frozen=True)
class AugView:
    """One test-time view of the input: an optional rescaling, then optional flips."""

    hflip: bool = False
    vflip: bool = False
    scale: float = 1.0

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        if self.scale != 1.0:
            size = [max(1, round(s * self.scale)) for s in images.shape[-2:]]
            # antialias when shrinking, so the smaller view is not aliased
            images = F.interpolate(
                images, size=size, mode="bilinear", align_corners=False, antialias=self.scale < 1.0
            )
        return self._flip(images)

    def invert(self, cams: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Map ``[B, h, w]`` CAMs of the view back onto the original image grid."""
        cams = self._flip(cams)
        if tuple(cams.shape[-2:]) != tuple(size):
            cams = F.interpolate(cams[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
        return cams

    def _flip(self, x: torch.Tensor) -> torch.Tensor:
        dims = [d for d, on in ((-1, self.hflip), (-2, self.vflip)) if on]
        return x.flip(dims) if dims else x


#: The four flips at full size, plus no-flip / h-flip at 0.75x and 1.25x (8 views). The set is closed
#: under a horizontal flip, so a mirror-symmetric image gets an exactly mirror-symmetric smoothed CAM
#: whatever the model (pytorch-grad-cam's ttach default, h-flip x intensity 0.9/1/1.1, has 6 views).
AUG_SMOOTH_VIEWS: tuple[AugView, ...] = (
    AugView(),
    AugView(hflip=True),
    AugView(vflip=True),
    AugView(hflip=True, vflip=True),
    AugView(scale=0.75),
    AugView(hflip=True, scale=0.75),
    AugView(scale=1.25),
    AugView(hflip=True, scale=1.25),
)


def _aug_smooth(
    run: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor],
    images: torch.Tensor,
    class_ids: torch.Tensor,
) -> torch.Tensor:
    size = (images.shape[-2], images.shape[-1])
    total = torch.zeros(images.shape[0], *size, dtype=torch.float32, device=images.device)
    for view in AUG_SMOOTH_VIEWS:
        total += view.invert(run(view.apply(images), class_ids), size)
    return scale_cams(total / len(AUG_SMOOTH_VIEWS))


# ---- ViT tokens -----------------------------------------------------------------------------------------


def vit_reshape_transform(
    height: int | None = None, width: int | None = None, prefix_tokens: int = 1
) -> ReshapeTransform:
    """A ``reshape_transform`` for ViT-style tokens: ``[B, N, C]`` -> ``[B, C, height, width]``.

    Drops the first ``prefix_tokens`` tokens (class token, and register / distillation tokens if
    any), as pytorch-grad-cam's ``vit_reshape_transform`` drops one. ``height`` / ``width`` left out
    are inferred: a square grid, or the other side from the token count.
    """
    return functools.partial(_tokens_to_grid, height=height, width=width, prefix_tokens=prefix_tokens)


def _tokens_to_grid(
    tokens: torch.Tensor, height: int | None, width: int | None, prefix_tokens: int
) -> torch.Tensor:
    if tokens.ndim != 3:
        raise ConfigError(f"vit_reshape_transform expects tokens [B, N, C]; got shape {tuple(tokens.shape)}")
    grid = tokens[:, prefix_tokens:, :]
    n = grid.shape[1]
    if height is None and width is None:
        height = width = math.isqrt(n)
    elif height is None:
        height = n // width if width else 0
    elif width is None:
        width = n // height if height else 0
    if height * width != n:
        raise ConfigError(
            f"{n} patch tokens (after {prefix_tokens} prefix tokens) do not form a {height}x{width} grid"
        )
    return grid.reshape(grid.shape[0], height, width, grid.shape[2]).permute(0, 3, 1, 2)
