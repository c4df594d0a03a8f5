"""Faithfulness of saliency maps: deletion / insertion curves and their areas, and confidence change.

Deletion (Petsiuk et al., RISE 2018): replace the pixels in the map's order, most relevant first, by a
replacement image and watch the class score fall; a faithful map makes it fall fast (low area).
Insertion: start from the replacement image and put the original pixels back in the same order; a
faithful map makes the score rise fast (high area). The curve has ``steps + 1`` points at the
fractions ``0, 1/steps, ..., 1`` of the pixels; its area is the trapezoid over that [0, 1] axis.

Vectorised: a chunk of images gives ``chunk x (steps + 1)`` perturbed images in one tensor (a rank map
compared with every step's pixel count), scored in one forward on the model's device; never one image
and one step at a time. Ties in the map are broken by raster order (a stable sort), so the curve of a
given map is deterministic.

Replacement values (``REPLACEMENTS``, one function per entry): ``blur`` (the image Gaussian-blurred,
RISE's insertion start: removes detail, keeps the overall brightness), ``mean`` (each channel's mean),
``zero``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torchvision.transforms.functional import gaussian_blur

from medseg_weak.errors import ConfigError
from medseg_weak.interpret.scores import Score, class_scores, model_device
from medseg_weak.registry import Registry

Replacement = Callable[[torch.Tensor], torch.Tensor]
REPLACEMENTS: Registry[Replacement] = Registry("replacement value")
Mode = Literal["deletion", "insertion"]

BLUR_SIGMA_FRACTION = 0.05  # sigma = 5 % of the image side: 4.8 px at 96 px, ~RISE's sigma 5 at 224 px


@REPLACEMENTS.register("blur")
def blurred(images: torch.Tensor) -> torch.Tensor:
    sigma = max(0.5, BLUR_SIGMA_FRACTION * max(images.shape[-2:]))
    # +-3 sigma, but no wider than the image: torchvision pads by reflection, which needs that
    kernel = min(2 * int(3 * sigma) + 1, 2 * ((min(images.shape[-2:]) - 1) // 2) + 1)
    return gaussian_blur(images, [kernel, kernel], [sigma, sigma]) if kernel > 1 else images.clone()


@REPLACEMENTS.register("mean")
def channel_mean(images: torch.Tensor) -> torch.Tensor:
    return images.mean(dim=(-2, -1), keepdim=True).expand_as(images).clone()


@REPLACEMENTS.register("zero")
def zeros(images: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(images)


def pixel_ranks(maps: torch.Tensor) -> torch.Tensor:
    """``[N, H*W]`` rank of every pixel in its map, 0 = most relevant; ties by raster order."""
    flat = maps.flatten(1)
    order = torch.argsort(-flat, dim=1, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(flat.shape[1], device=flat.device).expand_as(order))
    return ranks


def step_counts(n_pixels: int, steps: int) -> torch.Tensor:
    """How many pixels are perturbed at each of the ``steps + 1`` points (0 ... all)."""
    if steps < 1:
        raise ConfigError(f"'interpret.steps' must be at least 1; got {steps}")
    return torch.round(torch.arange(steps + 1, dtype=torch.float64) * n_pixels / steps).long()


def perturbation_curves(
    model: torch.nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    targets: torch.Tensor,
    mode: Mode = "deletion",
    steps: int = 20,
    replacement: str = "blur",
    score: Score = "probability",
    batch_size: int = 256,
) -> torch.Tensor:
    """``[N, steps + 1]`` class scores along the deletion or insertion path of each image's map.

    ``images`` ``[N, C, H, W]``, ``maps`` ``[N, H, W]`` (any scale; only the order matters),
    ``targets`` ``[N]`` class ids. ``batch_size`` bounds the perturbed images per forward.
    """
    if mode not in ("deletion", "insertion"):
        raise ConfigError(f"perturbation mode must be 'deletion' or 'insertion'; got '{mode}'")
    replace = REPLACEMENTS.get(replacement)
    _check_maps(images, maps, targets)
    device = model_device(model)
    n, c, h, w = images.shape
    counts = step_counts(h * w, steps).to(device)
    per_chunk = max(1, batch_size // (steps + 1))
    curves = torch.empty(n, steps + 1, dtype=torch.float32, device=device)
    for start in range(0, n, per_chunk):
        x = images[start : start + per_chunk].to(device).float()
        base = replace(x)
        ranks = pixel_ranks(maps[start : start + per_chunk].to(device))
        # perturbed[b, s, pixel] is True where step s has reached that pixel
        reached = (ranks[:, None, :] < counts[None, :, None]).reshape(x.shape[0], steps + 1, 1, h, w)
        first, second = (base, x) if mode == "deletion" else (x, base)
        batch = torch.where(reached, first[:, None], second[:, None]).reshape(-1, c, h, w)
        ids = targets[start : start + x.shape[0]].to(device).repeat_interleave(steps + 1)
        curves[start : start + x.shape[0]] = class_scores(model, batch, ids, score, batch.shape[0]).reshape(
            x.shape[0], steps + 1
        )
    return curves


def curve_area(curves: torch.Tensor) -> torch.Tensor:
    """Trapezoid area of ``[N, steps + 1]`` curves over the pixel fraction axis [0, 1]."""
    return torch.trapezoid(curves, dx=1.0 / (curves.shape[1] - 1), dim=1)


def confidence_change(
    model: torch.nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    targets: torch.Tensor,
    score: Score = "probability",
    batch_size: int = 256,
) -> torch.Tensor:
    """``[N]`` score of ``image * map`` minus score of the image (maps in [0, 1]), exactly
    pytorch-grad-cam's ``CamMultImageConfidenceChange``: keeping only the map's region should keep
    the evidence, so a faithful map loses little (a value near 0 or above)."""
    _check_maps(images, maps, targets)
    device = model_device(model)
    x = images.to(device).float()
    kept = x * maps.to(device)[:, None]
    return class_scores(model, kept, targets, score, batch_size) - class_scores(
        model, x, targets, score, batch_size
    )


def _check_maps(images: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor) -> None:
    if images.ndim != 4 or maps.shape != (images.shape[0], *images.shape[-2:]):
        raise ConfigError(
            f"maps must be [N, H, W] matching images [N, C, H, W]; got {tuple(maps.shape)} "
            f"for images {tuple(images.shape)}"
        )
    if targets.shape != (images.shape[0],):
        raise ConfigError(f"targets must hold one class per image; got shape {tuple(targets.shape)}")
