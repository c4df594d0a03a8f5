"""The validation stages' sections: the fundus quality model, interpretability and invariance.

Same rules as ``sections``: torch-free, ranges checked when built (naming the dotted key); names
looked up in a registry (an smp encoder, a CAM method, a transformation set, a layer) are checked by
the stage's ``validate`` before any work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from medseg_weak.config.checks import Checked

#: How the decoder's degradation masks are read from the benchmark's bit-masks (bit i = kind i):
#: ``per_kind`` gives one output channel per degradation (the model says *what* is wrong *where*;
#: kinds overlap, so each channel is its own sigmoid), ``any`` one channel for their union.
MaskTarget = Literal["per_kind", "any"]
#: Which model of the run a validation stage looks at; ``auto``: the quality model where the run
#: has one (a fundus run), else the classifier.
ModelChoice = Literal["auto", "classifier", "quality"]


@dataclass(frozen=True)
class QualityConfig(Checked):
    """A segmentation-models-pytorch UNet whose encoder also feeds a Good / Usable / Reject head."""

    KEY: ClassVar[str] = "quality"
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
        self._range("encoder_depth", 1, 5)
        self._check(
            "decoder_channels",
            len(self.decoder_channels) == self.encoder_depth and all(c >= 1 for c in self.decoder_channels),
            f"{self.encoder_depth} positive channel counts (one per encoder stage)",
        )
        self._check("in_channels", self.in_channels in (1, 3), "3 (RGB) or 1 (grey)")
        self._range("dropout", 0.0, 1.0)
        self._check("dropout", self.dropout < 1.0, "< 1")
        self._at_least("mask_weight", 0.0)
        self._positive("lr")
        self._at_least("weight_decay", 0.0)
        self._at_least("epochs", 1)
        self._at_least("batch_size", 1)
        self._check("monitor", self.monitor.startswith("val/"), "a validation metric such as val/auroc")
        self._at_least("patience", 0)


@dataclass(frozen=True)
class InterpretConfig(Checked):
    """``interpret``: faithfulness, localisation and sanity checks of CAM methods on test images."""

    KEY: ClassVar[str] = "interpret"
    model: ModelChoice = "auto"
    methods: tuple[str, ...] = ("gradcam", "gradcam++", "xgradcam", "layercam", "hirescam")
    images: int = 64  # test images explained, spread over hospitals and classes (0: every one)
    steps: int = 20  # deletion / insertion curve points
    batch_size: int = 64  # images per forward, perturbed copies included
    replacement: str = "blur"  # what a deleted pixel becomes: blur, mean, zeros
    target: Literal["predicted", "label"] = "predicted"  # the class each map explains
    road: bool = True
    sanity: bool = True  # cascading model-parameter randomisation
    gallery: int = 4  # images per gallery row (best, worst, random)

    def __post_init__(self) -> None:
        self._check("methods", len(self.methods) >= 1, "at least one CAM method")
        self._at_least("images", 0)
        self._check("images", self.images != 1, "0 (every test image) or at least 2")
        self._at_least("steps", 2)
        self._at_least("batch_size", 1)
        self._at_least("gallery", 0)


@dataclass(frozen=True)
class InvarianceConfig(Checked):
    """``invariance``: how much each layer moves under transformations the model should ignore."""

    KEY: ClassVar[str] = "invariance"
    model: ModelChoice = "auto"
    # transformation sets (medseg_weak.invariance.TRANSFORMATION_SETS), each at its default range
    transforms: tuple[str, ...] = (
        "rotation",
        "brightness",
        "contrast",
        "gamma",
        "gaussian_blur",
        "vendor_curve",
    )
    steps: int = 0  # parameters per set (0: each set's own default)
    layers: tuple[str, ...] = ()  # module names; empty: the model's blocks, input to output
    measure: str = "normalized_variance"
    images: int = 64  # test images measured (0: every one)
    batch_size: int = 32
    per_domain: bool = True  # also one result per hospital / camera
    cam_methods: tuple[str, ...] = ("gradcam",)  # CAM equivariance per method; empty: off
    # invariance-matrix: one classifier per training augmentation (identity = none), each measured
    # under every evaluation transformation (empty: ``transforms``)
    matrix_train: tuple[str, ...] = ("identity", "rotation", "brightness", "contrast", "gaussian_blur")
    matrix_eval: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self._check("transforms", len(self.transforms) >= 1, "at least one transformation set")
        self._check("steps", self.steps == 0 or self.steps >= 2, "0 (the set's default) or at least 2")
        self._at_least("images", 0)
        self._check("images", self.images != 1, "0 (every test image) or at least 2")
        self._at_least("batch_size", 1)
        self._check("matrix_train", len(self.matrix_train) >= 1, "at least one training augmentation")
