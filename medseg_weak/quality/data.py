"""Training items for the quality model: colour fundus images, grades, cameras and degradation targets.

Images go through the project's fundus preprocessing (``preprocess_fundus``: field of view found,
cropped, resized) and its content-keyed cache, via the ``fundus_rgb`` preprocessor registered here:
the same preprocessing, after converting a grey photograph to RGB with a logged note (a red-free or
scanned photograph is still gradable; refusing it would drop exactly the images a user asks about).

Degradation targets come from the benchmark's bit-masks (bit ``i`` = ``DEGRADATIONS[i]``).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from medseg_weak.config.validation import MaskTarget
from medseg_weak.data.cache import ArrayCache
from medseg_weak.data.dataset import PreprocessedDataset
from medseg_weak.data.manifest import Manifest, Record
from medseg_weak.data.preprocess import Preprocessed, as_colour, preprocess_colour_fundus, preprocess_fundus  # noqa: F401 (re-exported)
from medseg_weak.data.synthetic.fundus import DEGRADATIONS

log = logging.getLogger(__name__)

#: The data kind of colour fundus models: its preprocessing gives every photograph 3 channels
#: (``medseg_weak.data.preprocess.preprocess_colour_fundus``).
COLOUR_FUNDUS = "fundus"


def mask_channels(target: MaskTarget) -> tuple[str, ...]:
    """Names of the decoder's output channels."""
    return DEGRADATIONS if target == "per_kind" else ("any",)


def degradation_target(bits: np.ndarray, target: MaskTarget) -> np.ndarray:
    """``[H, W]`` bit-mask -> ``[C, H, W]`` float32 0/1 targets, one channel per ``mask_channels``."""
    bits = np.asarray(bits).astype(np.uint8)
    if target == "any":
        return (bits > 0)[None].astype(np.float32)
    return np.stack([(bits >> i) & 1 for i in range(len(DEGRADATIONS))]).astype(np.float32)


class QualityDataset(Dataset):
    """Items: ``image`` [3,H,W], ``region`` (field of view), ``label``, ``domain`` (camera), ``index``,
    ``degradation`` [C,H,W] float 0/1 and ``has_mask`` (False where the manifest has no mask: the
    mask loss and Dice then skip that image)."""

    def __init__(
        self,
        manifest: Manifest,
        size: int,
        cache: ArrayCache | None = None,
        domains: list[str] | None = None,
        target: MaskTarget = "per_kind",
    ) -> None:
        self.base = PreprocessedDataset(manifest, COLOUR_FUNDUS, size, cache, domains)
        self.target = target
        self.channels = mask_channels(target)

    @property
    def records(self) -> list[Record]:
        return self.base.records

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict[str, Any]:
        arrays, _ = self.base.load(index)
        item = self.base.item(index, arrays)
        mask = item.pop("mask", None)
        has_mask = mask is not None
        shape = (len(self.channels), *item["region"].shape)
        degradation = (
            degradation_target(mask.numpy(), self.target) if has_mask else np.zeros(shape, np.float32)
        )
        item["degradation"] = torch.from_numpy(degradation)
        item["has_mask"] = has_mask
        return item
