"""A few images chosen and loaded as tensors, for the stages that measure a trained model on a sample
(interpretability, invariance): chosen to cover every hospital and class, deterministic for a seed.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from medseg_weak.data.dataset import PreprocessedDataset
from medseg_weak.data.manifest import Record

log = logging.getLogger(__name__)


def spread(records: Sequence[Record], n: int, seed: int = 0) -> list[Record]:
    """``n`` records (0 or more than there are: all), taken from each hospital in turn and, within a
    hospital, from each label in turn, so that a small sample still shows every hospital and class
    (and per-hospital statistics get as many images per hospital as possible); in manifest order."""
    if n <= 0 or n >= len(records):
        return list(records)
    rng = np.random.default_rng(seed)
    by_domain: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for i, r in enumerate(records):
        by_domain[r.domain][r.label].append(i)
    # one queue per hospital: its labels interleaved, each label's images in a seeded random order
    queues = []
    for _, labels in sorted(by_domain.items()):
        shuffled = [list(rng.permutation(members)) for _, members in sorted(labels.items())]
        queue = [int(q[k]) for k in range(max(map(len, shuffled))) for q in shuffled if k < len(q)]
        queues.append(queue)
    chosen: list[int] = []
    while len(chosen) < n:
        for queue in queues:
            if queue and len(chosen) < n:
                chosen.append(queue.pop(0))
    return [records[i] for i in sorted(chosen)]


@dataclass(frozen=True)
class Sample:
    """Images ``[N, C, H, W]`` with their regions (breast / field of view), masks where every image
    has one (any non-zero value: dense tissue, a degradation), labels, hospitals and ids."""

    images: torch.Tensor
    regions: torch.Tensor
    masks: torch.Tensor | None
    labels: tuple[str, ...]
    domains: tuple[str, ...]
    ids: tuple[str, ...]


def load_sample(dataset: PreprocessedDataset, channels: int | None = None) -> Sample:
    """Every image of ``dataset`` as one tensor (grey repeated / colour averaged to ``channels``)."""
    items = [dataset[i] for i in range(len(dataset))]
    images = torch.stack([it["image"] for it in items]).float()
    if channels is not None and images.shape[1] != channels:
        log.warning("%d-channel images given to a %d-channel model; converted", images.shape[1], channels)
        images = images.mean(1, keepdim=True) if channels == 1 else images[:, :1].expand(-1, channels, -1, -1)
    has_masks = all("mask" in it for it in items)
    return Sample(
        images=images.contiguous(),
        regions=torch.stack([it["region"] for it in items]),
        masks=torch.stack([it["mask"] > 0 for it in items]) if has_masks else None,
        labels=tuple(r.label for r in dataset.records),
        domains=tuple(r.domain for r in dataset.records),
        ids=tuple(r.id for r in dataset.records),
    )
