"""A torch Dataset of preprocessed images (and their ground-truth masks), read through the cache.

Each item is decoded, preprocessed and mapped to model geometry once; later epochs load a small
``.npz``. What preprocessing did to the geometry (flip, crop, scale, padding) is kept with the arrays
so that CAMs and predictions can be mapped back onto the original pixels.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from medseg_weak.data.cache import ArrayCache
from medseg_weak.data.io import read_image, read_mask
from medseg_weak.data.kinds import get_kind
from medseg_weak.data.manifest import Manifest, Record
from medseg_weak.data.preprocess import Preprocessed
from medseg_weak.errors import InputError

PREPROCESS_VERSION = 1  # bump when preprocessing changes what it returns, to invalidate cached entries


def preprocess_record(manifest: Manifest, record: Record, kind: str, size: int) -> tuple[dict, dict]:
    """Decode and preprocess one record: (arrays, geometry) as stored in the cache."""
    data_kind = get_kind(kind)
    pre = data_kind.preprocess(read_image(manifest.image_path(record)), size)
    arrays: dict[str, np.ndarray] = {"pixels": pre.pixels.astype(np.float32), "region": pre.mask}
    mask_path = manifest.mask_path(record)
    if mask_path is not None:
        mask = read_mask(mask_path)
        if mask.shape[:2] != tuple(pre.original_shape):
            raise InputError(mask_path, f"mask is {mask.shape[:2]}, its image is {tuple(pre.original_shape)}")
        mask = pre.to_model(mask, order=0)
        # Density masks are 0/255 foreground; fundus masks are degradation bit flags and stay as they are.
        arrays["mask"] = (mask > 0).astype(np.uint8) if data_kind.binary_mask else mask
    geometry = {
        f.name: _plain(getattr(pre, f.name))
        for f in dataclasses.fields(pre)
        if not isinstance(getattr(pre, f.name), np.ndarray)
    }
    return arrays, geometry


def preprocessed_from_cache(arrays: dict[str, np.ndarray], geometry: dict[str, Any]) -> Preprocessed:
    """Rebuild the geometry-carrying Preprocessed of a cached item (JSON turned tuples into lists)."""
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in geometry.items()}
    return Preprocessed(pixels=arrays["pixels"], mask=arrays["region"].astype(bool), **fields)


def _plain(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


class PreprocessedDataset(Dataset):
    """Items: ``image`` [C,H,W] float32, ``region`` [H,W] bool, ``label``, ``domain``, ``index``, and
    ``mask`` [H,W] uint8 (ground truth) where the manifest has one."""

    def __init__(
        self,
        manifest: Manifest,
        kind: str,
        size: int,
        cache: ArrayCache | None = None,
        domains: list[str] | None = None,
    ) -> None:
        """``domains`` fixes the hospital -> index mapping, so that subsets (one hospital's images)
        keep the index the whole data set uses."""
        get_kind(kind)  # fail now, with the valid names, not in a worker later
        self.manifest = manifest
        self.records = list(manifest.records)
        self.kind = kind
        self.size = size
        self.cache = cache
        self.domains = list(domains) if domains is not None else manifest.domains

    def __len__(self) -> int:
        return len(self.records)

    def load(self, index: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        record = self.records[index]

        def compute() -> tuple[dict, dict]:
            return preprocess_record(self.manifest, record, self.kind, self.size)

        if self.cache is None:
            return compute()
        key = self.cache.key(
            [self.manifest.image_path(record), self.manifest.mask_path(record)],
            {"kind": self.kind, "size": self.size, "version": PREPROCESS_VERSION},
        )
        return self.cache.get_or_compute(key, compute)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.item(index, self.load(index)[0])

    def item(self, index: int, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
        """The training item built from already loaded arrays, for callers that also need the
        arrays or geometry (CAM generation, segmentation targets) and must not load twice."""
        record = self.records[index]
        pixels = torch.from_numpy(arrays["pixels"])
        image = pixels.permute(2, 0, 1) if pixels.ndim == 3 else pixels.unsqueeze(0)
        item: dict[str, Any] = {
            "image": image.contiguous(),
            "region": torch.from_numpy(arrays["region"].astype(bool)),
            "label": self.manifest.label_index(record),
            "domain": self.domains.index(record.domain),
            "index": index,
        }
        if "mask" in arrays:
            item["mask"] = torch.from_numpy(arrays["mask"].astype(np.uint8))
        return item
