"""``QualityConfig``: the fundus image-quality model's section of the run config (torch-free).

Plain frozen dataclass checked in ``__post_init__`` with dotted-key errors, as the other sections of
``medseg_weak/config.py``; ``medseg_weak.config.from_dict(QualityConfig, raw, "quality")`` builds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from medseg_weak.errors import ConfigError

#: How the decoder's degradation masks are read from the benchmark's bit-masks (bit i = kind i):
#: ``per_kind`` gives one output channel per degradation (the model says *what* is wrong *where*;
#: kinds overlap, so each channel is its own sigmoid), ``any`` one channel for their union.
MaskTarget = Literal["per_kind", "any"]


@dataclass(frozen=True)
class QualityConfig:
    """A segmentation-models-pytorch UNet whose encoder also feeds a Good / Usable / Reject head."""

    encoder: str = "resnet18"  # any smp encoder name
    encoder_depth: int = 5  # 3-4 make tiny models for tests and CPU demos
    decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16)  # one per encoder stage
    in_channels: int = 3  # RGB; grey photographs are converted (with a logged note)
    weights: str = ""  # local encoder weights (smp, timm, torchvision or ours); never downloaded
    dropout: float = 0.2  # before the classification head's linear layer
    # Weight of the degradation-mask loss (BCE + Dice) against the grading cross-entropy; 0 turns the
    # decoder's training off (it is then untrained and its Dice is not reported).
    mask_weight: float = 1.0
    mask_target: MaskTarget = "per_kind"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    epochs: int = 20
    batch_size: int = 16
    monitor: str = "val/auroc"  # mean one-vs-rest AUROC: threshold-free, stable on small val sets
    monitor_mode: Literal["max", "min"] = "max"
    patience: int = 0  # early-stopping patience in epochs (0 = off)
    accelerator: str = "auto"
    precision: str = "32-true"

    def __post_init__(self) -> None:
        def fail(name: str, must: str) -> None:
            raise ConfigError(f"'quality.{name}' must be {must}; got {getattr(self, name)!r}")

        if not 1 <= self.encoder_depth <= 5:
            fail("encoder_depth", "between 1 and 5")
        if len(self.decoder_channels) != self.encoder_depth or any(c < 1 for c in self.decoder_channels):
            fail("decoder_channels", f"{self.encoder_depth} positive channel counts (one per encoder stage)")
        if self.in_channels not in (1, 3):
            fail("in_channels", "3 (RGB) or 1 (grey)")
        if not 0.0 <= self.dropout < 1.0:
            fail("dropout", "in [0, 1)")
        if self.mask_weight < 0:
            fail("mask_weight", ">= 0 (0 turns the degradation masks off)")
        if self.lr <= 0:
            fail("lr", "> 0")
        if self.weight_decay < 0:
            fail("weight_decay", ">= 0")
        if self.epochs < 1:
            fail("epochs", "at least 1")
        if self.batch_size < 1:
            fail("batch_size", "at least 1")
        if not self.monitor.startswith("val/"):
            fail("monitor", "a validation metric such as val/auroc or val/f1_macro")
        if self.patience < 0:
            fail("patience", ">= 0")
