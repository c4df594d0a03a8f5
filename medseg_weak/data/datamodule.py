"""LightningDataModule over a split manifest, with one training batch per hospital per step.

Gradient surgery needs each step to hold a batch from every training hospital; ERM trained on the
same per-hospital batches is then the fair baseline (same images per step, same BatchNorm batches).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import DataLoader, Sampler

from medseg_weak.data.cache import ArrayCache
from medseg_weak.data.dataset import PreprocessedDataset
from medseg_weak.data.manifest import Manifest
from medseg_weak.errors import ConfigError, InputError


def restrict_classes(manifest: Manifest, classes: tuple[str, ...]) -> Manifest:
    """Keep only images whose label is in ``classes`` (in that order): e.g. (A, D) for A-vs-D."""
    if not classes:
        return manifest
    unknown = [c for c in classes if c not in manifest.labels]
    if unknown:
        raise ConfigError(
            f"'classifier.classes' has {', '.join(unknown)}, not labels of the manifest "
            f"(valid: {', '.join(manifest.labels)})"
        )
    kept = [r for r in manifest.records if r.label in classes]
    return replace(manifest, records=tuple(kept), labels=tuple(classes))


class EpochSeededSampler(Sampler[int]):
    """A shuffle that depends only on (seed, epoch), so a run resumed at epoch k sees exactly the
    order an uninterrupted run would have; Lightning calls ``set_epoch`` on samplers that have it."""

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size


class HospitalDataModule(L.LightningDataModule):
    def __init__(
        self,
        manifest: Manifest,
        kind: str,
        image_size: int,
        batch_size: int,
        cache_dir: str | Path | None = None,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not all(r.split for r in manifest.records):
            raise ConfigError("HospitalDataModule needs a split manifest (see medseg_weak.data.splits)")
        self.manifest = manifest
        self.kind = kind
        self.image_size = image_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.cache = ArrayCache(cache_dir) if cache_dir else None
        self.domains = manifest.domains
        self.train_domains = sorted({r.domain for r in manifest.records if r.split == "train"})
        self._check()

    def _check(self) -> None:
        where = self.manifest.source or "manifest"
        if not self.train_domains:
            raise InputError(where, "no training images after splitting")
        problems = []
        for domain in self.train_domains:
            labels = {r.label for r in self.manifest.records if r.domain == domain and r.split == "train"}
            if len(labels) < 2:
                problems.append(
                    f"hospital '{domain}' has training images of one class only ({', '.join(labels)})"
                )
        if problems:
            raise InputError(where, "; ".join(problems))

    def split(self, name: str, domain: str | None = None) -> PreprocessedDataset:
        records = [
            r for r in self.manifest.records if r.split == name and (domain is None or r.domain == domain)
        ]
        return PreprocessedDataset(
            self.manifest.subset(records), self.kind, self.image_size, self.cache, domains=self.domains
        )

    def loader(self, dataset: PreprocessedDataset, shuffle: bool, offset: int = 0) -> DataLoader:
        sampler = EpochSeededSampler(len(dataset), self.seed * 1000 + offset) if shuffle else None
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> CombinedLoader:
        """``{hospital: batch}`` per step; shorter hospitals cycle until the longest is exhausted."""
        loaders = {
            domain: self.loader(self.split("train", domain), shuffle=True, offset=i)
            for i, domain in enumerate(self.train_domains)
        }
        return CombinedLoader(loaders, mode="max_size_cycle")

    def val_dataloader(self) -> DataLoader:
        return self.loader(self.split("val"), shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self.loader(self.split("test"), shuffle=False)
