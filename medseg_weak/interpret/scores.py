"""The class score every faithfulness metric watches: one batched forward, probability or logit.

One responsibility: turn ``(model, images, class ids)`` into one number per image, in chunks of
``batch_size`` on the model's device, so every metric scores perturbed images the same way.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from medseg_weak.errors import ConfigError

Score = Literal["probability", "logit"]
SCORES: tuple[str, ...] = ("probability", "logit")


def model_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return torch.device("cpu") if param is None else param.device


def check_score(score: str) -> None:
    if score not in SCORES:
        raise ConfigError(f"'interpret.score' must be one of {', '.join(SCORES)}; got '{score}'")


@torch.no_grad()
def class_scores(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    score: Score = "probability",
    batch_size: int = 256,
) -> torch.Tensor:
    """``[N]`` scores of class ``targets[i]`` for image ``i`` (``targets`` may repeat per image).

    ``probability`` is the softmax output (pytorch-grad-cam's ``ClassifierOutputSoftmaxTarget``),
    ``logit`` the raw output (``ClassifierOutputTarget``).
    """
    check_score(score)
    device = model_device(model)
    out = torch.empty(images.shape[0], dtype=torch.float32, device=device)
    for start in range(0, images.shape[0], batch_size):
        x = images[start : start + batch_size].to(device)
        logits = model(x)
        values = logits.softmax(dim=1) if score == "probability" else logits
        ids = targets[start : start + x.shape[0]].to(device).long()
        out[start : start + x.shape[0]] = values.gather(1, ids[:, None])[:, 0].float()
    return out


@torch.no_grad()
def predicted_classes(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    device = model_device(model)
    ids = [
        model(images[s : s + batch_size].to(device)).argmax(dim=1) for s in range(0, len(images), batch_size)
    ]
    return torch.cat(ids).cpu() if ids else torch.zeros(0, dtype=torch.long)
