"""``QualityNet``: an smp UNet whose encoder also feeds the quality-grade head (smp ``aux_params``).

The classification contract is the classifier's (``medseg_weak.classify.model.Classifier``):
``forward`` returns class logits, ``forward_features`` / ``forward_head`` split it at the deepest
encoder map and ``cam_layer`` is an identity on that map, so CAM and interpretability code treat the
quality model and the density classifier alike. ``forward_all`` adds the decoder's degradation
logits for training. No weights are ever downloaded.
"""

from __future__ import annotations

import difflib

from torch import Tensor, nn

from medseg_weak.config import QualityConfig
from medseg_weak.core.weights import load_matching_weights
from medseg_weak.errors import ConfigError


class QualityNet(nn.Module):
    def __init__(self, cfg: QualityConfig, num_classes: int, mask_channels: int) -> None:
        super().__init__()
        import segmentation_models_pytorch as smp

        encoders = smp.encoders.get_encoder_names()
        if cfg.encoder not in encoders:
            close = difflib.get_close_matches(cfg.encoder, encoders, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ConfigError(f"'quality.encoder': unknown smp encoder '{cfg.encoder}'{hint}")
        self.unet = smp.Unet(
            encoder_name=cfg.encoder,
            encoder_depth=cfg.encoder_depth,
            encoder_weights=None,  # never download
            decoder_channels=list(cfg.decoder_channels),
            in_channels=cfg.in_channels,
            classes=mask_channels,
            aux_params={"classes": num_classes, "dropout": cfg.dropout, "pooling": "avg"},
        )
        self.cam_layer = nn.Identity()

    def cam_layers(self) -> dict[str, nn.Module]:
        """Candidate CAM target layers by name; ``"final"`` is the deepest encoder map."""
        return {"final": self.cam_layer}

    def _encode(self, x: Tensor) -> list[Tensor]:
        features = self.unet.encoder(x)
        features[-1] = self.cam_layer(features[-1])
        return features

    def forward_features(self, x: Tensor) -> Tensor:
        return self._encode(x)[-1]

    def forward_head(self, features: Tensor) -> Tensor:
        return self.unet.classification_head(features)

    def forward(self, x: Tensor) -> Tensor:
        """Grade logits ``[B, classes]`` (the decoder is not run)."""
        return self.forward_head(self.forward_features(x))

    def forward_all(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(grade logits ``[B, classes]``, degradation logits ``[B, mask_channels, H, W]``)."""
        features = self._encode(x)
        masks = self.unet.segmentation_head(self.unet.decoder(features))
        return self.forward_head(features[-1]), masks


def load_encoder_weights(model: QualityNet, path: str) -> tuple[list[str], list[str]]:
    """Local encoder weights (an smp encoder, a timm / torchvision model, one of our checkpoints)."""
    return load_matching_weights(model.unet.encoder, path, "'quality.weights'")
