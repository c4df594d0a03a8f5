"""Data kinds (mammograms, fundus photographs): everything that differs between them, in one entry.

A kind says how images are preprocessed, how many channels a model sees, which labels it carries in
which order, what a ground-truth mask means, which class's CAM makes the pseudo-mask by default, and
which built-in generator makes its benchmark. Stages ask the kind instead of branching on its name,
so a new modality is one entry here (plus its preprocessing and generator functions).

Import-light on purpose: the CLI lists the kinds in ``--help`` without importing torch, so the
preprocessing and generator functions are resolved on first call.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from medseg_weak.config import Config
from medseg_weak.data.manifest import DENSITY_LABELS, QUALITY_LABELS
from medseg_weak.errors import ConfigError, RegistryError
from medseg_weak.registry import Registry


def _lazy(module: str, name: str) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    call.__qualname__ = call.__name__ = name
    return call


@dataclass(frozen=True)
class DataKind:
    name: str
    description: str
    channels: int  # model input channels (grey 1, colour 3)
    labels: tuple[str, ...]  # the default label set, in order (ordinal where it is)
    mask_meaning: str  # what mask_path holds, for reports
    binary_mask: bool  # True: mask > 0 is the foreground; False: the mask's values are kept (bit flags)
    cam_target: str  # the class whose CAM makes the pseudo-mask by default
    domain_prefix: str  # the built-in benchmark names its domains <prefix>1..<prefix>n
    preprocess: Callable[..., Any]  # (Image, size) -> Preprocessed
    generate: Callable[..., Any]  # (out, SynthConfig, seed, progress) -> list[Record]
    # what ``medseg-weak pipeline`` runs on it: ``segment`` (classifier -> CAMs -> UNet -> eval) or
    # ``quality`` (the quality model -> interpretability -> invariance)
    chain: str = "segment"

    def synthetic_domains(self, count: int) -> tuple[str, ...]:
        return tuple(f"{self.domain_prefix}{i + 1}" for i in range(count))


KINDS: Registry[DataKind] = Registry("data kind")

KINDS.register("mammo")(
    DataKind(
        name="mammo",
        description="mammograms, breast density A-D",
        channels=1,
        labels=DENSITY_LABELS,
        mask_meaning="dense fibroglandular tissue",
        binary_mask=True,
        # The densest class's CAM points at dense tissue on every image; the predicted class's
        # CAM would point at fat on fatty breasts (DESIGN.md, "Which class's CAM makes the mask").
        cam_target="D",
        domain_prefix="H",  # hospitals
        preprocess=_lazy("medseg_weak.data.preprocess", "preprocess_mammogram"),
        generate=_lazy("medseg_weak.data.synthetic", "mammo_records"),
    )
)
KINDS.register("fundus")(
    DataKind(
        name="fundus",
        description="colour fundus photographs, image quality Good/Usable/Reject",
        channels=3,
        labels=QUALITY_LABELS,
        mask_meaning="degradations (bit flags: blur, illumination, artefact)",
        binary_mask=False,
        cam_target="Reject",  # where the evidence for "retake this photo" is
        domain_prefix="C",  # cameras
        preprocess=_lazy("medseg_weak.data.preprocess", "preprocess_colour_fundus"),
        generate=_lazy("medseg_weak.data.synthetic", "fundus_records"),
        chain="quality",
    )
)


def get_kind(name: str, key: str = "data.kind") -> DataKind:
    """The kind called ``name``; a ConfigError naming ``key`` and the valid kinds otherwise."""
    try:
        return KINDS.get(name)
    except RegistryError as err:
        raise ConfigError(f"'{key}': {err}") from None


def resolve_kind_defaults(cfg: Config) -> Config:
    """Fill the settings left to the data kind (input channels, CAM target), so that the config
    stored in a run directory says what was actually used."""
    kind = get_kind(cfg.data.kind)
    classifier, segmenter, cams = cfg.classifier, cfg.segmenter, cfg.cams
    if classifier.in_channels == 0:
        classifier = dataclasses.replace(classifier, in_channels=kind.channels)
    if segmenter.in_channels == 0:
        segmenter = dataclasses.replace(segmenter, in_channels=kind.channels)
    if not cams.target:
        cams = dataclasses.replace(cams, target=kind.cam_target)
    return dataclasses.replace(cfg, classifier=classifier, segmenter=segmenter, cams=cams)
