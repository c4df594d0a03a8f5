"""Typed configuration: YAML -> frozen dataclasses, with dotted ``--set`` overrides.

Every key is checked against the dataclass fields, so a typo fails loudly with its dotted path and
the valid keys instead of being silently ignored.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from medseg_weak.classify.augment import AugmentConfig
from medseg_weak.errors import ConfigError, RegistryError
from medseg_weak.explain.masks import MaskRule
from medseg_weak.io_utils import atomic_write_text
from medseg_weak.segment.losses import LOSSES


@dataclass(frozen=True)
class SynthConfig:
    """The built-in benchmark: what ``medseg-weak synth`` generates when no manifest is given."""

    kind: Literal["mammo", "fundus"] = "mammo"
    n_per_hospital: int = 40
    hospitals: int = 4
    spurious_cue: float = 0.0
    height: int = 512  # mammograms: image height in pixels (each hospital varies it a little)
    size: int = 256  # fundus: image side in pixels
    workers: int = 1
    # mammograms, spurious cue: per_hospital = each hospital its own marker; shared = one marker in
    # every hospital, only its correlation with density differs (data/synthetic/cue.py)
    cue_mode: Literal["per_hospital", "shared"] = "per_hospital"
    # sign (+1 / -1) of the cue-density correlation per hospital, e.g. {H1: -1, H2: 1}; hospitals not
    # named keep the mode's default (documented in data/synthetic/cue.py)
    cue_sign: dict[str, int] = field(default_factory=dict)
    # mammograms: reader noise as the target quadratic kappa of noisy vs clean labels; 1 = none
    label_noise: float = 1.0


@dataclass(frozen=True)
class DataConfig:
    """Which images, how they are preprocessed, and how they are split."""

    manifest: str = ""  # empty: use the synthetic benchmark generated into the run directory
    kind: Literal["mammo", "fundus"] = "mammo"
    image_size: int = 128
    cache_dir: str = ""  # empty: <run directory>/cache
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    test_domain: str = ""  # leave-one-domain-out: this hospital is held out entirely
    labels: tuple[str, ...] = ()  # empty: inferred (density A-D or quality Good/Usable/Reject)
    num_workers: int = 0


@dataclass(frozen=True)
class SurgeryConfig:
    """How per-hospital gradients are combined (``rule``) and that rule's hyper-parameters.

    A rule takes the fields its class declares (``tau`` for and_mask, ``eta`` for group_dro), so a
    new rule's parameter is one field here, never a string-keyed dict.
    """

    rule: str = "erm"  # erm, agr_sum, agr_rand, pcgrad, and_mask, group_dro
    tau: float = 1.0  # and_mask: sign-agreement threshold
    eta: float = 0.01  # group_dro: step size of the hospital weights
    coral_weight: float = 0.0  # > 0 adds a CORAL feature-alignment loss between hospitals
    diagnostics_every: int = 20  # log gradient-conflict diagnostics every N steps (0 = never)


@dataclass(frozen=True)
class ClassifierConfig:
    """Stage 1: the image-level classifier (density A-D, or a subset such as A vs D)."""

    backbone: str = "tiny_cnn"  # ours (tiny_cnn), smp encoders as 'smp:resnet18', or any timm name
    in_channels: int = 1
    weights: str = ""  # local checkpoint to start from (timm / torchvision / smp / ours); never downloaded
    freeze_backbone_epochs: int = 0
    classes: tuple[str, ...] = ()  # empty: every label; [A, D]: binary A-vs-D (other images dropped)
    dropout: float = 0.0
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    epochs: int = 10
    batch_size: int = 16  # images per hospital per step
    monitor: str = "val/balanced_accuracy"
    monitor_mode: Literal["max", "min"] = "max"
    patience: int = 0  # early-stopping patience in epochs (0 = off)
    accelerator: str = "auto"
    devices: str = "auto"
    strategy: str = "auto"
    precision: str = "32-true"
    surgery: SurgeryConfig = field(default_factory=SurgeryConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass(frozen=True)
class CamConfig:
    """Stage 2: class activation maps of the classifier, turned into pseudo-masks."""

    method: str = "gradcam"  # a name in medseg_weak.explain.CAM_METHODS
    layer: str = "final"  # a name in the classifier's cam_layers(); "final" = last feature map
    target: str = "D"  # class whose CAM makes the mask (the densest class), or "predicted"
    batch_size: int = 32
    aug_smooth: bool = False  # test-time augmentation smoothing (flips, scales)
    mask: MaskRule = field(default_factory=MaskRule)


@dataclass(frozen=True)
class SegmenterConfig:
    """Stage 3: the segmentation network trained on the pseudo-masks (and optional self-training)."""

    arch: str = "unet"  # any smp architecture: unet, unetplusplus, fpn, deeplabv3plus, ...
    encoder: str = "resnet18"  # any smp encoder name
    encoder_depth: int = 5  # 3-4 make tiny models for tests and CPU demos
    decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16)  # one per encoder stage (unet-like archs)
    in_channels: int = 1
    encoder_weights_path: str = ""  # local state dict (smp encoder, our classifier .ckpt); never downloaded
    loss: str = "dice_ce"  # a name in medseg_weak.segment.losses.LOSSES
    dice_weight: float = 1.0  # dice_ce
    ce_weight: float = 1.0  # dice_ce
    gce_q: float = 0.7  # gce: 1 = MAE (most noise-robust), towards 0 = cross-entropy
    lr: float = 1e-3
    weight_decay: float = 1e-4
    epochs: int = 10
    batch_size: int = 8
    # Train on the pseudo-masks of these classes' images only (empty: all). The dense-class CAM is
    # reliable on dense breasts and nearly empty on fatty ones, where "no CAM" is absence of evidence,
    # not evidence of no dense tissue; the UNet carries what it learns from dense breasts to the rest.
    pseudo_mask_classes: tuple[str, ...] = ()
    # Image labels as a size prior (a size-constraint loss, Kervadec et al. 2019): {class: [low, high]}
    # bounds the fraction of the breast the UNet calls foreground, e.g. BI-RADS (4th ed.) quartiles
    # {A: [0, 0.25], B: [0.25, 0.5], C: [0.5, 0.75], D: [0.75, 1]}. Empty: off.
    size_prior: dict[str, tuple[float, float]] = field(default_factory=dict)
    size_weight: float = 1.0
    self_training_rounds: int = 0  # rounds of re-labelling with the segmenter's confident pixels
    confidence: float = 0.9  # self-training: p >= c is foreground, p <= 1 - c background
    monitor: str = "val/dice"
    monitor_mode: Literal["max", "min"] = "max"
    patience: int = 0  # early-stopping patience in epochs (0 = off)
    accelerator: str = "auto"
    precision: str = "32-true"  # e.g. bf16-mixed or 16-mixed on a GPU

    def __post_init__(self) -> None:
        def fail(name: str, must: str) -> None:
            raise ConfigError(f"'segmenter.{name}' must be {must}; got {getattr(self, name)!r}")

        if not 1 <= self.encoder_depth <= 5:
            fail("encoder_depth", "between 1 and 5")
        if not self.decoder_channels or any(c < 1 for c in self.decoder_channels):
            fail("decoder_channels", "a non-empty list of positive channel counts")
        if self.in_channels < 1:
            fail("in_channels", "at least 1")
        try:
            LOSSES.get(self.loss)
        except RegistryError as err:
            raise ConfigError(f"'segmenter.loss': {err}") from None
        if self.dice_weight < 0:
            fail("dice_weight", ">= 0")
        if self.ce_weight < 0:
            fail("ce_weight", ">= 0")
        if self.loss == "dice_ce" and self.dice_weight == 0 and self.ce_weight == 0:
            fail("dice_weight", "> 0 when segmenter.ce_weight is 0 (the loss would be constant)")
        if not 0.0 < self.gce_q <= 1.0:
            fail("gce_q", "in (0, 1]")
        if self.lr <= 0:
            fail("lr", "> 0")
        if self.weight_decay < 0:
            fail("weight_decay", ">= 0")
        if self.epochs < 1:
            fail("epochs", "at least 1")
        if self.batch_size < 1:
            fail("batch_size", "at least 1")
        if self.self_training_rounds < 0:
            fail("self_training_rounds", ">= 0")
        # c = 0.5 would make a pixel with p = 0.5 confidently both classes at once.
        if not 0.5 < self.confidence <= 1.0:
            fail("confidence", "in (0.5, 1]")
        if not self.monitor:
            fail("monitor", "a logged metric name such as val/dice")
        if self.patience < 0:
            fail("patience", ">= 0")
        for label, (low, high) in self.size_prior.items():
            if not 0.0 <= low <= high <= 1.0:
                raise ConfigError(
                    f"'segmenter.size_prior.{label}' must be [low, high] with 0 <= low <= high <= 1; "
                    f"got [{low}, {high}]"
                )
        if self.size_weight < 0:
            fail("size_weight", ">= 0")


@dataclass(frozen=True)
class Config:
    """The whole run. Each stage reads its own section."""

    name: str = "demo"
    seed: int = 0
    runs_dir: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    cams: CamConfig = field(default_factory=CamConfig)
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)


def load_config(path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Load ``path`` (or the defaults), apply ``key.sub=value`` overrides, validate every key."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML ({err})") from err
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(
                f"{path}: the top level must be a mapping of sections, got {type(loaded).__name__}"
            )
        raw = loaded or {}
    for override in overrides:
        apply_override(raw, override)
    return from_dict(Config, raw)


def apply_override(raw: dict[str, Any], override: str) -> None:
    """Apply one ``a.b.c=value`` override in place; the value is YAML (``3``, ``true``, ``[a, b]``)."""
    key, sep, value = override.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set '{override}': expected KEY=VALUE, e.g. data.image_size=128")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"--set '{override}': value is not valid YAML ({err})") from err
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set '{override}': '{part}' is a value, not a section")
        node = child
    node[parts[-1]] = parsed


def from_dict(cls: type, raw: Any, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, checking names and types with dotted-path errors."""
    where = prefix or "config"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"'{where}' must be a mapping, got {type(raw).__name__} ({raw!r})")
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown key '{dotted}'{hint}; valid keys in '{where}': {', '.join(valid)}")
        kwargs[key] = _coerce(hints[key], value, dotted)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, dotted: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, dotted)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, dotted)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else f"'{dotted}': {value!r} fits none of {tp}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"'{dotted}' must be one of {', '.join(map(str, args))}; got {value!r}")
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"'{dotted}' must be a mapping; got {value!r}")
        return {str(k): _coerce(args[1], v, f"{dotted}.{k}") for k, v in value.items()}
    if origin is tuple:
        items = value if isinstance(value, list | tuple) else [value]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{dotted}[{i}]") for i, v in enumerate(items))
        if len(items) != len(args):
            raise ConfigError(f"'{dotted}' needs {len(args)} values, got {len(items)}")
        return tuple(_coerce(a, v, f"{dotted}[{i}]") for i, (a, v) in enumerate(zip(args, items)))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"'{dotted}' must be true or false; got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"'{dotted}' must be an integer; got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"'{dotted}' must be a number; got {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, bool) or value is None or isinstance(value, dict | list):
            raise ConfigError(f"'{dotted}' must be a string; got {value!r}")
        return str(value)
    raise TypeError(
        f"config field '{dotted}' has unsupported type {tp}"
    )  # a bug in this file, not user error


def to_dict(config: Any) -> dict[str, Any]:
    """Plain-data view of a config (tuples as lists) for YAML/JSON."""

    def plain(v: Any) -> Any:
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(config))


def dump_config(config: Config, path: str | Path) -> Path:
    """Write the resolved config so that a run directory says exactly what produced it."""
    return atomic_write_text(Path(path), yaml.safe_dump(to_dict(config), sort_keys=False))
