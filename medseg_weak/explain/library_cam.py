"""The library CAM path: any method of pytorch-grad-cam, batched, its hooks released on every exit."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from medseg_weak.errors import ConfigError
from medseg_weak.explain.cam_methods import CamMethod
from medseg_weak.explain.reshape import ReshapeTransform


def library_cams(
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
