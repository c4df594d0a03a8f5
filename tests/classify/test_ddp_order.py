"""Exactly which images each DDP rank trains on with the real ``HospitalDataModule``, pinned as a test.

Lightning injects a distributed sampler into every training loader (``use_distributed_sampler``, the
default; ``lightning.pytorch.trainer.connectors.data_connector._get_distributed_sampler``): our
``EpochSeededSampler`` is wrapped in a ``DistributedSamplerWrapper`` with ``shuffle=True`` (training
data is always shuffled) and ``seed = PL_GLOBAL_SEED`` (0 when unset). For a hospital of n images at
epoch e, on W ranks:

  one = EpochSeededSampler order   (torch.randperm(n) seeded (seed * 1000 + hospital index) * 100003 + e)
  pos = torch.randperm(n) seeded PL_GLOBAL_SEED + e, padded with its own first (-n mod W) entries
  rank r trains on one[pos[r]], one[pos[r + W]], one[pos[r + 2W]], ...

So every run with the same seeds and world size sees the same order (resume stays exact), each epoch
covers every image once (plus the padding), and the W ranks' batch k together are NOT the one-process
batch k. That is why tests/classify/test_ddp.py, which compares DDP weights with one process, hands
Lightning an already-distributed, unshuffled wrapper in a test-only data module.
"""

from __future__ import annotations

import os

import torch
from lightning.pytorch.trainer.connectors.data_connector import _get_distributed_sampler

from medseg_weak.data.datamodule import EpochSeededSampler, HospitalDataModule
from medseg_weak.data.manifest import DENSITY_LABELS, Manifest, Record

WORLD = 2
SEED = 3
SIZES = {"H1": 6, "H2": 5}  # H2 odd: one padded index


def _manifest(tmp_path) -> Manifest:
    records = tuple(
        Record(f"{h}_{i}", f"{h}_{i}.png", "AD"[i % 2], h, f"{h}_p{i}", split="train")
        for h, n in SIZES.items()
        for i in range(n)
    )
    return Manifest(records=records, root=tmp_path, labels=DENSITY_LABELS)


def test_rank_order_under_lightning_ddp(tmp_path):
    data = HospitalDataModule(_manifest(tmp_path), "mammo", 32, batch_size=2, seed=SEED)
    global_seed = int(os.environ.get("PL_GLOBAL_SEED", 0))  # set by seed_everything in earlier tests
    differs = []
    for i, (hospital, loader) in enumerate(data.train_dataloader().iterables.items()):
        n = SIZES[hospital]
        for epoch in (0, 1):
            one_process = EpochSeededSampler(n, SEED * 1000 + i)
            one_process.set_epoch(epoch)
            one = list(one_process)
            shards = []
            for rank in range(WORLD):
                sampler = _get_distributed_sampler(loader, True, 0, num_replicas=WORLD, rank=rank)
                sampler.set_epoch(epoch)  # Lightning calls it every epoch; it reaches our sampler too
                shards.append(list(sampler))
            pos = torch.randperm(n, generator=torch.Generator().manual_seed(global_seed + epoch)).tolist()
            pos += pos[: (-n) % WORLD]
            for rank in range(WORLD):
                assert shards[rank] == [one[p] for p in pos[rank::WORLD]], (hospital, epoch, rank)
            assert sorted(set(shards[0] + shards[1])) == list(range(n))
            differs.append(sorted(shards[0][:1] + shards[1][:1]) != sorted(one[:WORLD]))
    assert any(differs)  # the ranks' first batches together are not one process's first batch
