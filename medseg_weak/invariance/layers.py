"""Which layers to measure when the user names none: the feature extractor's blocks, then the logits.

Any model works: the feature extractor is the first module named ``body``, ``encoder``, ``features``
or ``blocks`` (our backbones, smp encoders, torchvision / timm CNNs and ViTs), else the model's own
children. A probe forward keeps the blocks that actually run (an smp encoder of depth 3 still holds
``layer4``), in the order they run; the classification head (a child named ``head``,
``classification_head``, ``fc`` or ``classifier``) comes last: invariance versus depth ends at the
decision.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medseg_weak.errors import ConfigError

BODY_NAMES = ("body", "encoder", "features", "blocks")
HEAD_NAMES = ("head", "classification_head", "fc", "classifier")


def default_layers(model: nn.Module, sample: torch.Tensor) -> list[str]:
    """Names (as in ``model.named_modules()``) of the blocks a forward of ``sample`` runs through."""
    names = dict(model.named_modules())
    body = next(
        (
            name
            for name in names
            if name and name.rsplit(".", 1)[-1] in BODY_NAMES and list(names[name].children())
        ),
        "",
    )
    prefix = f"{body}." if body else ""
    candidates = [f"{prefix}{child}" for child, _ in names[body].named_children()]
    candidates += [n for n in names if n and n.rsplit(".", 1)[-1] in HEAD_NAMES and n not in candidates]
    fired: list[str] = []
    handles: list[Any] = []

    def hook(name: str) -> Any:
        return lambda module, args, output: fired.append(name) if name not in fired else None

    try:
        for name in candidates:
            handles.append(names[name].register_forward_hook(hook(name)))
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(sample[:1])
        model.train(was_training)
    finally:
        for handle in handles:
            handle.remove()
    if not fired:
        raise ConfigError(
            f"no layer of '{type(model).__name__}' to measure found; name them ('invariance.layers')"
        )
    return fired
