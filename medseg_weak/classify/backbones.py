"""Backbones by name, with one contract: ``forward_features`` -> a spatial feature map, a CAM layer.

Names resolve in this order: our own small CNNs (``tiny_cnn`` for tests and CPU demos), then
segmentation-models-pytorch encoders as ``smp:<encoder>`` (the same encoders the UNet uses, so a
classifier's weights can seed a segmenter), then any timm model name. No weights are ever
downloaded; ``load_weights`` reads a local file instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from medseg_weak.core.weights import load_matching_weights
from medseg_weak.errors import ConfigError
from medseg_weak.registry import Registry

log = logging.getLogger(__name__)


class Backbone(nn.Module):
    """Wraps a feature extractor so that every backbone looks the same to the rest of the code.

    ``cam_layer`` is an identity applied to the final feature map: hooking it (pytorch-grad-cam) or
    differentiating with respect to its output (our fast path) is exactly a CAM of the last stage,
    whatever the architecture, so no caller ever digs into ``model.layer4[-1]``.
    ``stages`` names earlier candidate CAM layers (coarse to fine resolution varies by model).
    """

    def __init__(
        self, body: nn.Module, num_features: int, stages: dict[str, nn.Module] | None = None
    ) -> None:
        super().__init__()
        self.body = body
        self.num_features = num_features
        self.cam_layer = nn.Identity()
        self._stage_names = list((stages or {}).keys())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.body(x)
        if isinstance(features, list | tuple):  # smp encoders return every stage; the last is deepest
            features = features[-1]
        return self.cam_layer(features)

    def cam_layers(self) -> dict[str, nn.Module]:
        """Candidate CAM target layers by name; ``"final"`` is the default one."""
        layers = {"final": self.cam_layer}
        modules = dict(self.body.named_modules())
        layers.update({name: modules[name] for name in self._stage_names if name in modules})
        return layers


BackboneFactory = Callable[[int], Backbone]
BACKBONES: Registry[BackboneFactory] = Registry("backbone")


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    # BatchNorm, not GroupNorm: density is a global brightness property, and per-image normalisation
    # (GroupNorm / InstanceNorm) removes exactly that (measured: GroupNorm stalled at chance on the
    # demo). momentum=0.3 lets running statistics catch up within the few steps of a small demo run.
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout, momentum=0.3),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout, momentum=0.3),
        nn.ReLU(inplace=True),
    )


@BACKBONES.register("tiny_cnn")
def tiny_cnn(in_channels: int) -> Backbone:
    """Four conv stages (16-32-64-64 channels, stride 8): trains in seconds on a CPU at 64-128 px."""
    widths = (16, 32, 64, 64)
    layers: list[nn.Module] = []
    cin = in_channels
    for i, width in enumerate(widths):
        layers.append(_conv_block(cin, width))
        if i < len(widths) - 1:
            layers.append(nn.MaxPool2d(2))
        cin = width
    body = nn.Sequential(*layers)
    return Backbone(body, widths[-1], {"4": body[4], "2": body[2]})


def create_backbone(name: str, in_channels: int = 1) -> Backbone:
    """Build a backbone by name with random weights (see :func:`load_weights` for local weights)."""
    if in_channels not in (1, 3):
        raise ConfigError(f"'classifier.in_channels' must be 1 or 3; got {in_channels}")
    if name in BACKBONES:
        return BACKBONES.get(name)(in_channels)
    if name.startswith("smp:"):
        return _smp_backbone(name[4:], in_channels)
    return _timm_backbone(name, in_channels)


def _smp_backbone(encoder: str, in_channels: int) -> Backbone:
    import segmentation_models_pytorch as smp

    try:
        body = smp.encoders.get_encoder(encoder, in_channels=in_channels, depth=5, weights=None)
    except KeyError as err:
        valid = ", ".join(sorted(smp.encoders.get_encoder_names())[:20])
        raise ConfigError(
            f"'classifier.backbone': unknown smp encoder '{encoder}'; e.g. {valid}, ..."
        ) from err
    return Backbone(body, body.out_channels[-1])


def _timm_backbone(name: str, in_channels: int) -> Backbone:
    import timm

    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('_')[0]}*")[:8]
        ours = ", ".join(BACKBONES.names())
        raise ConfigError(
            f"'classifier.backbone': unknown backbone '{name}'. Ours: {ours}; smp encoders as 'smp:<name>'; "
            f"timm models by name{' (similar: ' + ', '.join(close) + ')' if close else ''}"
        )
    model = timm.create_model(name, pretrained=False, in_chans=in_channels, num_classes=0, global_pool="")
    stages = {info["module"]: None for info in getattr(model, "feature_info", [])[:-1]}
    body = _TimmFeatures(model)
    return Backbone(body, model.num_features, {f"model.{k}": v for k, v in stages.items()})


class _TimmFeatures(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)


def load_weights(backbone: Backbone, path: str | Path) -> tuple[list[str], list[str]]:
    """Load a local checkpoint (timm / torchvision state dict, smp encoder, or our Lightning .ckpt).

    Classifier heads and shape mismatches are reported, never silently half-loaded (see
    :mod:`medseg_weak.core.weights`). Returns (missing, unexpected) key lists for logging.
    """
    return load_matching_weights(backbone.body, path, "'classifier.weights'")
