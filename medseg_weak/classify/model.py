"""The classifier network: backbone + pooled linear head, split so CAM code can reuse both halves.

``forward_features`` / ``forward_head`` follow timm's contract: a CAM method can run the backbone
without autograd, then differentiate only the head with respect to the feature map.
"""

from __future__ import annotations

import torch
from torch import nn

from medseg_weak.classify.backbones import Backbone, create_backbone


class Classifier(nn.Module):
    def __init__(self, backbone: Backbone, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(backbone.num_features, num_classes)

    @classmethod
    def create(cls, backbone: str, in_channels: int, num_classes: int, dropout: float = 0.0) -> Classifier:
        return cls(create_backbone(backbone, in_channels), num_classes, dropout)

    @property
    def cam_layer(self) -> nn.Module:
        """The module whose output is the final feature map (the default Grad-CAM target)."""
        return self.backbone.cam_layer

    def cam_layers(self) -> dict[str, nn.Module]:
        return self.backbone.cam_layers()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        pooled = features.mean(dim=(2, 3))
        return self.head(self.dropout(pooled))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
