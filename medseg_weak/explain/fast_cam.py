"""The fast Grad-CAM path: differentiate only what comes after the target layer (DESIGN section 4).

Only the part of the network *after* the target layer is recorded for autograd, and
``torch.autograd.grad(score, activation)`` stops at the target layer: no parameter gradients, no
backward through the backbone, no numpy. For the model's ``cam_layer`` this uses the
``forward_features`` / ``forward_head`` split; for any other layer a forward hook turns the layer's
output into a fresh leaf and switches autograd on from there (everything before it ran under
``torch.no_grad()``). The maps equal pytorch-grad-cam's (tested to ~1e-6).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medseg_weak.errors import ConfigError
from medseg_weak.explain.cam_methods import FastFormula
from medseg_weak.explain.cam_scaling import finish_cams
from medseg_weak.explain.reshape import ReshapeTransform


def fast_cams(
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
