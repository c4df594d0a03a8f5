"""Reshaping a target layer's output to a ``[B, C, h, w]`` grid: ViT-style tokens to feature maps."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch

from medseg_weak.errors import ConfigError

ReshapeTransform = Callable[[torch.Tensor], torch.Tensor]


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
