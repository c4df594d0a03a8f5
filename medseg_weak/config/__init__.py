"""Typed configuration: one frozen dataclass per stage (``sections``), YAML loading with dotted
``--set`` overrides and key checking (``loader``). Torch-free and stage-free: the bottom layer."""

from medseg_weak.config.loader import (
    apply_override,
    dump_config,
    from_dict,
    load_config,
    to_dict,
)
from medseg_weak.config.sections import (
    AugmentConfig,
    CamConfig,
    ClassifierConfig,
    Config,
    DataConfig,
    EvalConfig,
    IntensityAugmentConfig,
    InterpretConfig,
    InvarianceConfig,
    MaskRule,
    QualityConfig,
    SegmenterConfig,
    SurgeryConfig,
    SynthConfig,
)

__all__ = [
    "AugmentConfig",
    "CamConfig",
    "ClassifierConfig",
    "Config",
    "DataConfig",
    "EvalConfig",
    "IntensityAugmentConfig",
    "InterpretConfig",
    "InvarianceConfig",
    "MaskRule",
    "QualityConfig",
    "SegmenterConfig",
    "SurgeryConfig",
    "SynthConfig",
    "apply_override",
    "dump_config",
    "from_dict",
    "load_config",
    "to_dict",
]
