"""Training pairs for the segmenter: preprocessed images with pseudo-masks (or the truth) as targets.

Pseudo-masks are stored in the original image geometry (cams/mask/<id>.png); they are mapped into the
model geometry with the same flip / crop / resize as the image, so the UNet sees aligned pairs.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from medseg_weak.data.dataset import PreprocessedDataset, preprocessed_from_cache
from medseg_weak.data.io import read_mask
from medseg_weak.errors import InputError
from medseg_weak.segment.losses import IGNORE

Source = Literal["cams", "truth", "self"]


class SegmentationDataset(Dataset):
    """Items: ``image`` [C,H,W], ``target`` [H,W] uint8 {0,1,255}, ``region``, ``domain``, ``index`` and,
    where the manifest has one, ``mask`` (ground truth, 0/1) for evaluation."""

    def __init__(
        self,
        base: PreprocessedDataset,
        source: Source,
        cams_dir: Path | None = None,
        targets_dir: Path | None = None,
        trusted_classes: Collection[str] = (),
        size_prior: Mapping[str, tuple[float, float]] | None = None,
    ) -> None:
        """``source``: "cams" (pseudo-masks in original geometry under ``cams_dir/mask``), "truth" (the
        manifest's masks) or "self" (self-training targets already in model geometry in ``targets_dir``).

        ``trusted_classes`` (non-empty): pseudo-masks of images of other classes become IGNORE inside
        the region, so those images teach only what the size prior says. ``size_prior``: per class
        (low, high) foreground fraction of the region, as ``size_bounds`` (NaN for other classes)."""
        self.base = base
        self.source = source
        self.trusted_classes = frozenset(trusted_classes)
        self.size_prior = dict(size_prior or {})
        self.cams_dir = Path(cams_dir) if cams_dir is not None else None
        self.targets_dir = Path(targets_dir) if targets_dir is not None else None
        if source == "self" and self.targets_dir is None:
            raise ValueError("source 'self' needs targets_dir")
        if source == "cams":
            if self.cams_dir is None:
                raise ValueError("source 'cams' needs cams_dir")
            missing = [r.id for r in base.records if not (self.cams_dir / "mask" / f"{r.id}.png").is_file()]
            if missing:
                shown = ", ".join(missing[:10]) + (
                    f" ... ({len(missing)} in all)" if len(missing) > 10 else ""
                )
                raise InputError(
                    self.cams_dir,
                    f"no pseudo-mask for {len(missing)} image(s): {shown}; run medseg-weak cams",
                )
        elif source == "truth" and any(base.manifest.mask_path(r) is None for r in base.records):
            raise InputError(base.manifest.source, "source 'truth' needs a mask_path for every image")

    def __len__(self) -> int:
        return len(self.base)

    def _target(self, index: int, arrays: dict[str, np.ndarray], geometry: dict[str, Any]) -> np.ndarray:
        if self.source == "truth":
            return arrays["mask"].astype(np.uint8)
        record = self.base.records[index]
        if self.source == "self":
            return read_mask(self.targets_dir / f"{record.id}.png").astype(np.uint8)
        path = self.cams_dir / "mask" / f"{record.id}.png"
        pre = preprocessed_from_cache(arrays, geometry)
        pseudo = read_mask(path)
        if pseudo.shape != tuple(pre.original_shape):
            raise InputError(path, f"pseudo-mask is {pseudo.shape}, its image is {tuple(pre.original_shape)}")
        return pre.to_model(pseudo, order=0).astype(np.uint8)

    def __getitem__(self, index: int) -> dict[str, Any]:
        arrays, geometry = self.base.load(index)
        item = self.base.item(index, arrays)
        target = self._target(index, arrays, geometry)
        label = self.base.records[index].label
        if self.trusted_classes and self.source != "truth" and label not in self.trusted_classes:
            target = np.where(arrays["region"].astype(bool), IGNORE, target).astype(np.uint8)
        item["target"] = torch.from_numpy(target)
        item["size_bounds"] = torch.tensor(self.size_prior.get(label, (float("nan"), float("nan"))))
        return item
