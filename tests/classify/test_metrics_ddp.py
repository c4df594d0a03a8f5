"""Per-hospital metrics under DDP: ranks whose shards lack a hospital must neither hang nor disagree.

Two gloo processes: rank 0 sees hospitals H1 and H2, rank 1 only H1, and nobody H3. Every rank must
run the same collectives (a rank that skips H2's ``compute()`` leaves rank 0 waiting in an all-gather),
report H2 (seen on some rank) and not H3 (seen on none), and give exactly what one process gives on
the union of the two shards.
"""

from __future__ import annotations

import socket
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from medseg_weak.classify.metrics import HospitalMetrics

WORLD = 2
DOMAINS = ["H1", "H2", "H3"]
CLASSES = 3


def _shard(rank: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rank 0: 6 images of H1 and 5 of H2; rank 1: 7 images of H1 (uneven on purpose)."""
    generator = torch.Generator().manual_seed(rank)
    domains = torch.tensor([0] * 6 + [1] * 5) if rank == 0 else torch.zeros(7, dtype=torch.long)
    probs = torch.rand(len(domains), CLASSES, generator=generator).softmax(1)
    labels = torch.randint(0, CLASSES, (len(domains),), generator=generator)
    return probs, labels, domains


def _worker(rank: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    # A short timeout turns the deadlock this test is about into an error instead of a hang.
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=WORLD,
        timeout=timedelta(seconds=30),
    )
    try:
        metrics = HospitalMetrics(CLASSES, DOMAINS)
        results = []
        for _ in range(2):  # twice: reset() must leave every rank ready for the next epoch
            probs, labels, domains = _shard(rank)
            metrics.update(probs, labels, domains)
            results.append(metrics.compute())
            metrics.reset()
        dist.barrier()
        torch.save(results, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_hospital_missing_from_one_rank(tmp_path):
    mp.start_processes(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, start_method="spawn")
    one = HospitalMetrics(CLASSES, DOMAINS)
    for rank in range(WORLD):
        one.update(*_shard(rank))
    want = one.compute()
    assert any(k.startswith("H2/") for k in want) and not any(k.startswith("H3/") for k in want)
    for rank in range(WORLD):
        for got in torch.load(tmp_path / f"rank{rank}.pt"):
            assert sorted(got) == sorted(want), rank
            for key in want:
                torch.testing.assert_close(got[key], want[key], msg=lambda m, k=key, r=rank: f"{r} {k}: {m}")


def test_matches_torchmetrics_classes_and_reset_forgets():
    """The functional scores per hospital equal torchmetrics' metric classes fed that hospital alone."""
    from torchmetrics.classification import MulticlassAUROC, MulticlassCohenKappa

    metrics = HospitalMetrics(CLASSES, DOMAINS)
    probs, labels, domains = _shard(0)
    metrics.update(probs[:4], labels[:4], domains[:4])
    metrics.update(probs[4:], labels[4:], domains[4:])
    got = metrics.compute()
    h2 = domains == 1
    auroc = MulticlassAUROC(CLASSES)(probs[h2], labels[h2])
    kappa = MulticlassCohenKappa(CLASSES, weights="quadratic")(probs[h2], labels[h2])
    torch.testing.assert_close(got["H2/auroc"], auroc)
    torch.testing.assert_close(got["H2/kappa"], kappa)
    assert got["H1/confusion"].sum() == 6 and got["confusion"].sum() == 11
    metrics.reset()
    metrics.update(probs[h2], labels[h2], domains[h2])
    assert sorted({k.split("/")[0] for k in metrics.compute() if "/" in k}) == ["H2"]
