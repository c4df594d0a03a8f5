"""The config sections: one frozen dataclass per stage, each with its defaults and range checks.

A section checks what it can know alone (types, ranges, combinations of its own fields) when it is
built, so a bad value fails while the YAML is read, naming its dotted key. Names looked up in a
stage's registry (a gradient rule, a loss, a CAM method, a data kind) are checked by that stage's
``validate`` (``medseg_weak.stages``), which the runner calls for every stage of a plan before any
work: this module stays torch-free and imports no stage package.

Settings that only one member of a family uses (``tau`` of and_mask, ``q`` of the GCE loss) default
to ``None`` = "the member's own default": the default lives once, in the member, and a value given
for a member that is not selected is refused by the stage's validation instead of silently ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from medseg_weak.config.checks import Checked, fail, is_number
from medseg_weak.config.validation import InterpretConfig, InvarianceConfig, QualityConfig
from medseg_weak.errors import ConfigError


@dataclass(frozen=True)
class SynthConfig(Checked):
    """The built-in benchmark: what ``medseg-weak synth`` generates when no manifest is given."""

    KEY: ClassVar[str] = "synth"
    kind: str = "mammo"  # a data kind (medseg_weak.data.kinds): mammo, fundus
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
    # strength in [0, 1] per hospital, e.g. {H3: 0.3}; hospitals not named have spurious_cue
    cue_strength: dict[str, float] = field(default_factory=dict)
    # mammograms: reader noise as the target quadratic kappa of noisy vs clean labels; 1 = none
    label_noise: float = 1.0
    # mammograms: "on" / "off" = every image drawn as without this, but with / without the marker
    # (counterfactual sets for measuring a model's reliance on the cue); empty = the cue as drawn
    force_cue: Literal["", "on", "off"] = ""
    cue_size: float = 1.0  # mammograms: the marker's radius relative to the default (2.6 % of the height)
    # mammograms: per_hospital = each hospital its own scanner and population; shared = every hospital
    # H1's, so with cue_mode shared the marker's sign is all that differs (the clean positive control)
    vendor_mode: Literal["per_hospital", "shared"] = "per_hospital"

    def __post_init__(self) -> None:
        self._at_least("n_per_hospital", 1)
        self._at_least("hospitals", 1)
        self._range("spurious_cue", 0.0, 1.0)
        self._at_least("height", 64)
        self._at_least("size", 32)
        self._at_least("workers", 1)
        self._range("label_noise", 0.0, 1.0)
        self._check("force_cue", self.force_cue in ("", "on", "off"), "on, off or empty")
        self._range("cue_size", 0.0, 4.0, low_open=True)
        self._check("vendor_mode", self.vendor_mode in ("per_hospital", "shared"), "per_hospital or shared")


@dataclass(frozen=True)
class DataConfig(Checked):
    """Which images, how they are preprocessed, and how they are split."""

    KEY: ClassVar[str] = "data"
    manifest: str = ""  # empty: use the synthetic benchmark generated into the run directory
    kind: str = "mammo"  # a data kind (medseg_weak.data.kinds): preprocessing, channels, labels
    image_size: int = 128
    cache_dir: str = ""  # empty: <run directory>/cache
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    test_domain: str = ""  # leave-one-domain-out: this hospital is held out entirely
    labels: tuple[str, ...] = ()  # empty: the kind's labels (density A-D, quality Good/Usable/Reject)
    num_workers: int = 0

    def __post_init__(self) -> None:
        self._at_least("image_size", 16)
        self._range("val_fraction", 0.0, 1.0, low_open=True)
        self._range("test_fraction", 0.0, 1.0)
        self._check(
            "test_fraction",
            self.val_fraction + self.test_fraction < 1.0,
            f"< 1 - data.val_fraction ({self.val_fraction}) so that training images remain",
        )
        self._at_least("num_workers", 0)
        self._check("labels", len(set(self.labels)) == len(self.labels), "a list without repeats")


@dataclass(frozen=True)
class SurgeryConfig(Checked):
    """How per-hospital gradients are combined (``rule``) and that rule's hyper-parameters.

    A rule's parameter (``tau`` of and_mask, ``eta`` of group_dro) defaults to ``None``: the rule's
    own default. Setting it under another rule is refused (``classify.stage`` validation).
    """

    KEY: ClassVar[str] = "classifier.surgery"
    rule: str = "erm"  # erm, agr_sum, agr_rand, pcgrad, and_mask, group_dro
    tau: float | None = None  # and_mask: sign-agreement threshold in [0, 1] (default 1)
    eta: float | None = None  # group_dro: step size of the hospital weights, >= 0 (default 0.01)
    coral_weight: float = 0.0  # > 0 adds a CORAL feature-alignment loss between hospitals
    diagnostics_every: int = 20  # log gradient-conflict diagnostics every N steps (0 = never)

    # Fields that belong to one rule each: {field: rule}.
    RULE_PARAMETERS: ClassVar[dict[str, str]] = {"tau": "and_mask", "eta": "group_dro"}

    def __post_init__(self) -> None:
        if self.tau is not None:
            self._range("tau", 0.0, 1.0)
        if self.eta is not None:
            self._at_least("eta", 0.0)
        self._at_least("coral_weight", 0.0)
        self._at_least("diagnostics_every", 0)
        for name, rule in self.RULE_PARAMETERS.items():
            if getattr(self, name) is not None and self.rule != rule:
                fail(
                    f"{self.KEY}.{name}",
                    f"left unset: it is a setting of rule '{rule}', and the rule is '{self.rule}'",
                    getattr(self, name),
                )

    def rule_parameters(self) -> dict[str, float]:
        """The parameters given for the selected rule (the rule supplies the rest)."""
        return {n: getattr(self, n) for n in self.RULE_PARAMETERS if getattr(self, n) is not None}


@dataclass(frozen=True)
class AugmentConfig(Checked):
    """Which augmentations run, and how strongly. Everything is off by default.

    ``flip`` flips images VERTICALLY (with probability 1/2 per image). Horizontal flips are never
    used: preprocessing puts every mammogram's chest wall on the left, and a horizontal flip would
    produce chest-wall-right images the model never sees at test time. A vertical flip keeps the
    chest wall on the left; it puts the pectoral muscle of MLO views at the bottom, which is
    anatomically unusual but leaves density labels unchanged.

    ``fourier_beta`` is the side of the mixed low-frequency square as a fraction of the frequency
    band along each axis: frequencies ``|k_y| <= beta * H / 2`` and ``|k_x| <= beta * W / 2`` are
    mixed, so 1.0 mixes the whole spectrum (FACT's default) and 0.1 the lowest tenth (about the
    FDA setting beta=0.05, whose square has half-width ``beta * min(H, W)``).
    """

    KEY: ClassVar[str] = "classifier.augment"
    flip: bool = False
    gamma: float = 0.0  # gamma ~ exp(U(-g, g)); g <= 2
    contrast: float = 0.0  # x -> (x - m) * c + m + b, c ~ exp(U(-s, s)), b ~ U(-s/4, s/4); s <= 2
    histogram_matching: float = 0.0  # probability per image
    fourier_mixing: float = 0.0  # probability per image
    fourier_beta: float = 0.1  # in (0, 1], see the class docstring
    fourier_alpha: float = 1.0  # lambda ~ U(0, alpha), alpha in (0, 1]

    def __post_init__(self) -> None:
        self._check("flip", isinstance(self.flip, bool), "true or false")
        # Upper bounds catch typos (gamma=30 for 0.3): exp(2) already allows 7x curves and contrasts.
        self._range("gamma", 0.0, 2.0)
        self._range("contrast", 0.0, 2.0)
        self._range("histogram_matching", 0.0, 1.0)
        self._range("fourier_mixing", 0.0, 1.0)
        self._range("fourier_beta", 0.0, 1.0, low_open=True)
        # alpha > 1 would extrapolate past the partner's amplitude and could make amplitudes negative.
        self._range("fourier_alpha", 0.0, 1.0, low_open=True)

    @property
    def enabled(self) -> bool:
        return self.flip or any(
            getattr(self, n) > 0 for n in ("gamma", "contrast", "histogram_matching", "fourier_mixing")
        )


@dataclass(frozen=True)
class ClassifierConfig(Checked):
    """Stage 1: the image-level classifier (density A-D, or a subset such as A vs D)."""

    KEY: ClassVar[str] = "classifier"
    backbone: str = "tiny_cnn"  # ours (tiny_cnn), smp encoders as 'smp:resnet18', or any timm name
    in_channels: int = 0  # 0: the data kind's channels (1 for mammograms, 3 for fundus photographs)
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
    # BatchNorm running statistics used for evaluation: ``running`` = updated by every training
    # forward (one per hospital batch, so the last hospitals of a step weigh most); ``pooled`` =
    # recomputed before each validation from one pass over every training hospital's images
    # ("precise BN"), so evaluation normalises with statistics of the pooled training data.
    bn_stats: Literal["running", "pooled"] = "running"
    # BatchNorm statistics at test and CAM time: ``training`` = those of training (above); ``hospital``
    # = each hospital's images normalised with statistics of that hospital's own (unlabelled) images
    # (AdaBN), which takes a scanner's intensity shift out before the decision threshold sees it.
    test_bn: Literal["training", "hospital"] = "training"
    accelerator: str = "auto"
    devices: str = "auto"
    strategy: str = "auto"
    precision: str = "32-true"
    surgery: SurgeryConfig = field(default_factory=SurgeryConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        self._check("in_channels", self.in_channels in (0, 1, 3), "1 or 3 (or 0: the data kind's)")
        self._at_least("freeze_backbone_epochs", 0)
        self._range("dropout", 0.0, 1.0)
        self._check("dropout", self.dropout < 1.0, "< 1")
        self._positive("lr")
        self._at_least("weight_decay", 0.0)
        self._at_least("epochs", 1)
        self._at_least("batch_size", 1)
        self._at_least("patience", 0)
        self._check("monitor", self.monitor.startswith("val/"), "a validation metric such as val/kappa")
        self._check("classes", len(set(self.classes)) == len(self.classes), "a list without repeats")
        self._check("classes", len(self.classes) != 1, "empty or at least two classes")
        if self.precision.startswith("16") and self.surgery.rule != "erm":
            # Surgery writes unscaled gradients, but the fp16 GradScaler would still unscale them.
            self._check(
                "precision", False, f"bf16-mixed or 32-true with gradient surgery (rule {self.surgery.rule})"
            )


@dataclass(frozen=True)
class IntensityAugmentConfig(Checked):
    """The segmenter's scanner-shift augmentation: intensity curves only, so a pixel's target stays
    where it is (random gamma and contrast per training image, inside the breast / field of view).
    Off by default."""

    KEY: ClassVar[str] = "segmenter.augment"
    gamma: float = 0.0  # gamma ~ exp(U(-g, g)); g <= 2
    contrast: float = 0.0  # x -> (x - m) * c + m + b, c ~ exp(U(-s, s)), b ~ U(-s/4, s/4); s <= 2

    def __post_init__(self) -> None:
        self._range("gamma", 0.0, 2.0)
        self._range("contrast", 0.0, 2.0)

    @property
    def enabled(self) -> bool:
        return self.gamma > 0 or self.contrast > 0


@dataclass(frozen=True)
class MaskRule(Checked):
    """How one CAM becomes a pseudo-mask (the ``cams.mask`` section of the run config).

    IRN's seeds (confident fg above 0.30, confident bg below 0.05 of a max-normalised CAM, the rest
    ignored) are ``MaskRule(low=0.05, high=0.30)`` on max-normalised CAMs. ``threshold`` and
    ``refine`` name entries of ``medseg_weak.explain.masks.THRESHOLDS`` / ``REFINERS``, checked by
    ``medseg_weak.explain.masks.check_rule``.
    """

    KEY: ClassVar[str] = "cams.mask"
    threshold: str = "otsu"  # name in THRESHOLDS: fixed, percentile, otsu, mean, max_fraction
    value: float = 0.5  # fixed: the threshold; percentile: 0-100 of region values; max_fraction: 0-1 of max
    ignore_band: float = 0.0  # > 0: region pixels with |cam - t| < ignore_band (CAM units) become IGNORE
    low: float | None = None  # with high: cam < low -> 0, cam >= high -> 1, between -> IGNORE (overrides
    high: float | None = None  # threshold and ignore_band); set both or neither
    min_object_px: int = 0  # drop foreground components with fewer pixels (4-connected, CAM resolution)
    fill_holes: bool = False  # fill non-foreground pixels enclosed by foreground (IGNORE ones included)
    opening_radius: int = 0  # binary opening of the foreground with a disk of this radius (0: off)
    refine: str = "none"  # name in REFINERS: none, intensity, random_walk (no dense CRF: not installable)
    refine_band_px: int = 0  # refiners also re-decide fg/bg pixels this close to the fg/bg boundary
    outside_region: str = "background"  # pixels outside the region: background (0) or ignore (255)
    degenerate: str = "background"  # empty region / constant CAM: region becomes background or ignore

    FILL_CHOICES: ClassVar[tuple[str, ...]] = ("background", "ignore")

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ConfigError("; ".join(problems))

    def problems(self) -> list[str]:
        """Every problem of the rule's values at once (names are checked by explain.masks.check_rule)."""
        key = self.KEY
        problems: list[str] = []
        for name in ("outside_region", "degenerate"):
            choice = getattr(self, name)
            if choice not in self.FILL_CHOICES:
                problems.append(
                    f"'{key}.{name}' must be one of {', '.join(self.FILL_CHOICES)}; got {choice!r}"
                )
        for name in ("value", "ignore_band", "low", "high"):
            v = getattr(self, name)
            if v is None and name in ("low", "high"):
                continue
            if not is_number(v):
                problems.append(f"'{key}.{name}' must be a finite number; got {v!r}")
        for name in ("min_object_px", "opening_radius", "refine_band_px"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                problems.append(f"'{key}.{name}' must be an integer >= 0; got {v!r}")
        if not isinstance(self.fill_holes, bool):
            problems.append(f"'{key}.fill_holes' must be true or false; got {self.fill_holes!r}")
        if problems:  # range checks assume the types are right
            return problems
        if self.ignore_band < 0:
            problems.append(f"'{key}.ignore_band' must be >= 0; got {self.ignore_band}")
        if (self.low is None) != (self.high is None):
            problems.append(f"'{key}.low' and '{key}.high' go together: set both or neither")
        elif self.low is not None and self.high is not None and self.low > self.high:
            problems.append(f"'{key}.low' ({self.low}) must be <= '{key}.high' ({self.high})")
        if self.threshold == "percentile" and not 0 <= self.value <= 100:
            problems.append(
                f"'{key}.value' is a percentile for threshold 'percentile': 0-100; got {self.value}"
            )
        if self.threshold == "max_fraction" and not 0 <= self.value <= 1:
            problems.append(
                f"'{key}.value' is a fraction of the max for 'max_fraction': 0-1; got {self.value}"
            )
        return problems

    @property
    def uses_low_high(self) -> bool:
        return self.low is not None and self.high is not None


@dataclass(frozen=True)
class CamConfig(Checked):
    """Stage 2: class activation maps of the classifier, turned into pseudo-masks."""

    KEY: ClassVar[str] = "cams"
    method: str = "gradcam"  # a name in medseg_weak.explain.CAM_METHODS
    layer: str = "final"  # a name in the classifier's cam_layers(); "final" = last feature map
    target: str = ""  # class whose CAM makes the mask, or "predicted"; empty: the data kind's default
    batch_size: int = 32
    aug_smooth: bool = False  # test-time augmentation smoothing (flips, scales)
    mask: MaskRule = field(default_factory=MaskRule)
    # Where Lightning's predict loop runs (outputs do not depend on it: not in the stage fingerprint).
    # e.g. accelerator=gpu devices=4 strategy=ddp: four ranks, each writing its own images' files.
    accelerator: str = "auto"
    devices: str = "auto"  # per node
    strategy: str = "auto"
    num_nodes: int = 1

    PLACEMENT: ClassVar[tuple[str, ...]] = ("accelerator", "devices", "strategy", "num_nodes")

    def __post_init__(self) -> None:
        self._at_least("batch_size", 1)
        self._at_least("num_nodes", 1)


@dataclass(frozen=True)
class SegmenterConfig(Checked):
    """Stage 3: the segmentation network trained on the pseudo-masks (and optional self-training)."""

    KEY: ClassVar[str] = "segmenter"
    arch: str = "unet"  # any smp architecture: unet, unetplusplus, fpn, deeplabv3plus, ...
    encoder: str = "resnet18"  # any smp encoder name
    encoder_depth: int = 5  # 3-4 make tiny models for tests and CPU demos
    decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16)  # one per encoder stage (unet-like archs)
    in_channels: int = 0  # 0: the data kind's channels
    encoder_weights_path: str = ""  # local state dict (smp encoder, our classifier .ckpt); never downloaded
    loss: str = "dice_ce"  # a name in medseg_weak.segment.losses.LOSSES
    # Loss parameters (None: the loss's own default); only the selected loss's may be set.
    dice_weight: float | None = None  # dice_ce (default 1)
    ce_weight: float | None = None  # dice_ce (default 1)
    gce_q: float | None = None  # gce: 1 = MAE (most noise-robust), towards 0 = cross-entropy (default 0.7)
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
    augment: IntensityAugmentConfig = field(default_factory=IntensityAugmentConfig)

    # Loss parameters: {field: loss}. The field maps to the loss function's keyword ``field`` or,
    # with the loss name as prefix (``gce_q``), to keyword ``q``.
    LOSS_PARAMETERS: ClassVar[dict[str, str]] = {
        "dice_weight": "dice_ce",
        "ce_weight": "dice_ce",
        "gce_q": "gce",
    }

    def __post_init__(self) -> None:
        self._range("encoder_depth", 1, 5)
        self._check(
            "decoder_channels",
            bool(self.decoder_channels) and all(c >= 1 for c in self.decoder_channels),
            "a non-empty list of positive channel counts",
        )
        self._check("in_channels", self.in_channels >= 0, ">= 1 (or 0: the data kind's)")
        for name in ("dice_weight", "ce_weight"):
            if getattr(self, name) is not None:
                self._at_least(name, 0.0)
        if self.dice_weight == 0 and self.ce_weight == 0:
            self._check(
                "dice_weight", False, "> 0 when segmenter.ce_weight is 0 (the loss would be constant)"
            )
        if self.gce_q is not None:
            self._range("gce_q", 0.0, 1.0, low_open=True)
        for name, loss in self.LOSS_PARAMETERS.items():
            if getattr(self, name) is not None and self.loss != loss:
                self._check(
                    name, False, f"left unset: it is a setting of loss '{loss}', the loss is '{self.loss}'"
                )
        self._positive("lr")
        self._at_least("weight_decay", 0.0)
        self._at_least("epochs", 1)
        self._at_least("batch_size", 1)
        self._at_least("self_training_rounds", 0)
        # c = 0.5 would make a pixel with p = 0.5 confidently both classes at once.
        self._range("confidence", 0.5, 1.0, low_open=True)
        self._check("monitor", bool(self.monitor), "a logged metric name such as val/dice")
        self._at_least("patience", 0)
        for label, (low, high) in self.size_prior.items():
            if not 0.0 <= low <= high <= 1.0:
                fail(f"{self.KEY}.size_prior.{label}", "[low, high] with 0 <= low <= high <= 1", [low, high])
        self._at_least("size_weight", 0.0)

    def loss_parameters(self) -> dict[str, float]:
        """{keyword: value} for the selected loss, from the fields set (the loss supplies the rest)."""
        out = {}
        for name, loss in self.LOSS_PARAMETERS.items():
            value = getattr(self, name)
            if value is not None and loss == self.loss:
                out[name.removeprefix(f"{loss}_")] = value
        return out


@dataclass(frozen=True)
class EvalConfig(Checked):
    """Stage 4: scoring the test images. Only where and how Lightning's predict loop runs the
    segmenters: the scores do not depend on it, so the eval stage's fingerprint leaves it out."""

    KEY: ClassVar[str] = "eval"
    batch_size: int = 8
    accelerator: str = "auto"
    devices: str = "auto"  # per node
    strategy: str = "auto"
    num_nodes: int = 1

    def __post_init__(self) -> None:
        self._at_least("batch_size", 1)
        self._at_least("num_nodes", 1)


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
    eval: EvalConfig = field(default_factory=EvalConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    interpret: InterpretConfig = field(default_factory=InterpretConfig)
    invariance: InvarianceConfig = field(default_factory=InvarianceConfig)
