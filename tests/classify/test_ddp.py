"""DDP: two CPU processes (gloo) must train the weights that one process trains on the same data.

Gradient surgery is non-linear in the per-hospital gradients, so under DDP they must be averaged over
the ranks BEFORE the rule combines them, and the rule's random draws must be the same on every rank.
This test trains every rule for a few steps in one process (per-hospital batch 2b) and in two DDP
processes (batch b each, the two halves of the same batch) and compares the final weights.

Making the two runs comparable:
  * the model has no BatchNorm and no dropout (a test-only backbone registered below, at import, so
    processes that import this module know it too): a rank's BatchNorm normalises its half-batch with
    that half's statistics, which one process does not;
  * float64 (``precision="64-true"``) and SGD, so summation order does not matter at the tolerance;
  * the data order: in training, Lightning wraps a custom sampler in a SHUFFLING
    ``DistributedSamplerWrapper`` (it always shuffles training data), which reorders the data relative
    to one process. Here each rank's loader already holds an UNSHUFFLED wrapper around the same
    ``EpochSeededSampler`` (Lightning leaves a sampler that is already distributed alone), so rank r
    gets every 2nd index of the one-process order, and at step k the two ranks' batches together are
    the one-process batch k. Equal-sized hospitals, a multiple of 2b images each: no padding, no
    partial batch, and the mean of the ranks' mean losses is the full-batch mean loss.
Augmentation (per rank by design) and CORAL (non-linear in the batch) cannot match one process; for
them, and for a BatchNorm model, the test checks that the two ranks end with identical weights. A NaN
loss on ONE rank must stop both ranks with ``TrainingDiverged`` (not leave one waiting in a collective).

The DDP runs use the ``ddp`` strategy in two processes started once for all cases (as torchrun would
start them), which keeps the test within a few tens of seconds; one extra run checks ``ddp_spawn``.
"""

from __future__ import annotations

import os
import socket
import sys
from datetime import timedelta
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.multiprocessing as mp
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.utilities import CombinedLoader
from torch import nn
from torch.utils.data import DataLoader, Dataset

from medseg_weak.classify import module as module_mod
from medseg_weak.classify.backbones import BACKBONES, Backbone
from medseg_weak.classify.module import ClassifierModule, TrainingDiverged
from medseg_weak.config import load_config
from medseg_weak.data.datamodule import EpochSeededSampler

WORLD = 2
BATCH = 2  # images per hospital per step on each rank; one process takes WORLD * BATCH
HOSPITALS = ("H1", "H2", "H3")  # three, so that pcgrad's visiting order matters
SIZE = 8  # images per hospital: 2 steps per epoch
EPOCHS = 2  # the second epoch has another order (set_epoch) and another learning rate
BACKBONE = "ddp_test_plain_cnn"
BASE = [
    f"classifier.backbone={BACKBONE}",
    "classifier.optimizer=sgd",
    "classifier.lr=0.2",
    f"classifier.epochs={EPOCHS}",
    "classifier.surgery.diagnostics_every=0",
]

# name -> config overrides. MATCHING runs must give the one-process weights; the others (augmentation,
# CORAL, BatchNorm) cannot, and must only leave the ranks identical.
MATCHING = {
    "erm": ["classifier.surgery.rule=erm"],
    "erm_frozen": ["classifier.surgery.rule=erm", "classifier.freeze_backbone_epochs=1"],
    "agr_sum": ["classifier.surgery.rule=agr_sum"],
    "pcgrad": ["classifier.surgery.rule=pcgrad"],
    "agr_rand": ["classifier.surgery.rule=agr_rand", "classifier.surgery.diagnostics_every=1"],
    "group_dro": ["classifier.surgery.rule=group_dro", "classifier.surgery.eta=1.0"],
}
RANKS_AGREE = {
    # ERM with two backward passes in a step and a frozen backbone: DDP's reducer used to fail here.
    "erm_coral_frozen": [
        "classifier.surgery.rule=erm",
        "classifier.surgery.coral_weight=0.5",
        "classifier.freeze_backbone_epochs=1",
    ],
    "bn_agr_rand_coral_augment": [
        "classifier.backbone=tiny_cnn",
        "classifier.surgery.rule=agr_rand",
        "classifier.surgery.coral_weight=0.5",
        "classifier.augment.gamma=0.3",
        "classifier.surgery.diagnostics_every=1",
    ],
}
# Runs in which rank 1's H2 images are NaN: the fast ERM path and the surgery path check the loss at
# different places.
NAN_ON_RANK_1 = {
    "erm_nan": ["classifier.surgery.rule=erm"],
    "agr_sum_nan": ["classifier.surgery.rule=agr_sum"],
}


def _plain_cnn(in_channels: int) -> Backbone:
    """No BatchNorm, no dropout; tanh rather than ReLU, so no gradient component is exactly zero."""
    body = nn.Sequential(
        nn.Conv2d(in_channels, 6, 3, padding=1),
        nn.Tanh(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, padding=1),
        nn.Tanh(),
    )
    return Backbone(body, 8)


if BACKBONE not in BACKBONES:
    BACKBONES.register(BACKBONE)(_plain_cnn)


class _Hospital(Dataset):
    def __init__(self, index: int, nan: bool = False) -> None:
        generator = torch.Generator().manual_seed(index)
        self.images = torch.randn(SIZE, 1, 12, 12, generator=generator)
        self.labels = torch.arange(SIZE) % 2  # both classes in every batch
        # The label shifts the intensity up in H1 and H3 but down in H2: the hospitals' gradients
        # conflict, so that pcgrad projects (and its order matters) and agr_sum masks.
        self.images += self.labels.view(-1, 1, 1, 1) * (1.0, -1.0, 0.5)[index]
        if nan:
            self.images.fill_(float("nan"))

    def __len__(self) -> int:
        return SIZE

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[i], "label": self.labels[i]}


class _Data(L.LightningDataModule):
    """One loader per hospital, ``batch_size`` images each; on several ranks, an unshuffled shard each."""

    def __init__(self, batch_size: int, nan_rank: int | None = None) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.nan_rank = nan_rank  # this rank gets NaN images for H2

    def train_dataloader(self) -> CombinedLoader:
        world, rank = self.trainer.world_size, self.trainer.global_rank
        loaders = {}
        for i, hospital in enumerate(HOSPITALS):
            sampler = EpochSeededSampler(SIZE, seed=i)
            if world > 1:  # set_epoch still reaches the inner sampler through the wrapper
                sampler = DistributedSamplerWrapper(sampler, num_replicas=world, rank=rank, shuffle=False)
            dataset = _Hospital(i, nan=hospital == "H2" and rank == self.nan_rank)
            loaders[hospital] = DataLoader(dataset, batch_size=self.batch_size, sampler=sampler)
        return CombinedLoader(loaders, mode="max_size_cycle")


def _module(overrides: list[str]) -> ClassifierModule:
    cfg = load_config(None, [*BASE, *overrides]).classifier
    torch.manual_seed(0)  # the same initial weights everywhere (DDP also broadcasts rank 0's)
    return ClassifierModule.from_config(cfg, ["A", "B"], list(HOSPITALS), seed=3)


def _trainer(devices: int, strategy: object = "auto") -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy=strategy,
        max_epochs=EPOCHS,
        precision="64-true",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )


def _state(module: L.LightningModule) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _fit(
    overrides: list[str], devices: int, strategy: object = "auto", nan_rank: int | None = None
) -> dict[str, torch.Tensor]:
    module = _module(overrides)
    _trainer(devices, strategy).fit(module, datamodule=_Data(BATCH * WORLD // devices, nan_rank))
    return _state(module)


def _ddp_strategy(**kwargs: object) -> DDPStrategy:
    # A short collective timeout turns a hang into an error.
    return DDPStrategy(process_group_backend="gloo", timeout=timedelta(seconds=60), **kwargs)


def _worker(rank: int, port: int, out: str) -> None:
    """One DDP process: what torchrun would set up, then every case with strategy ``ddp``."""
    torch.set_num_threads(1)
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE=str(WORLD),
        NODE_RANK="0",
        LOCAL_RANK=str(rank),
    )
    # The process's own stderr (C++ messages included) goes to a file the fixture shows if a rank dies:
    # a SIGABRT says nothing by itself, and pytest's captured output of a child is easily cut short.
    log = open(Path(out) / f"rank{rank}.log", "w")  # noqa: SIM115 - open for the process's lifetime
    os.dup2(log.fileno(), 2)
    try:
        for name, overrides in {**MATCHING, **RANKS_AGREE}.items():
            print(f"case {name}", file=sys.stderr, flush=True)
            torch.save(_fit(overrides, WORLD, _ddp_strategy()), Path(out) / f"{name}-rank{rank}.pt")
        for name, overrides in NAN_ON_RANK_1.items():  # last: these runs end in an exception
            print(f"case {name}", file=sys.stderr, flush=True)
            try:
                _fit(overrides, WORLD, _ddp_strategy(), nan_rank=1)
            except TrainingDiverged as err:
                (Path(out) / f"{name}-rank{rank}.txt").write_text(str(err))
    finally:
        # Lightning leaves the process group to its owner (as torchrun would); tearing it down here,
        # not in the interpreter's exit, keeps gloo's threads from dying with the process.
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory) -> Path:
    """The folder of every case's results (``<case>-rank<r>.pt`` / ``.txt``) of two DDP processes."""
    out = tmp_path_factory.mktemp("ddp")
    try:
        mp.start_processes(_worker, args=(_free_port(), str(out)), nprocs=WORLD, start_method="spawn")
    except (mp.ProcessExitedException, mp.ProcessRaisedException) as err:
        logs = "\n".join(
            f"--- rank {r} (last 40 lines) ---\n" + "\n".join(log.read_text().splitlines()[-40:])
            for r in range(WORLD)
            if (log := out / f"rank{r}.log").exists()
        )
        pytest.fail(f"a DDP process died: {err}\n{logs}", pytrace=False)
    return out


def _states(out: Path, name: str) -> list[dict[str, torch.Tensor]]:
    return [torch.load(out / f"{name}-rank{r}.pt") for r in range(WORLD)]


def _assert_ranks_identical(states: list[dict[str, torch.Tensor]]) -> None:
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), f"ranks differ in {key}"


def _assert_trained_like(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], overrides) -> None:
    start = _state(_module(overrides))
    moved = max((want[k] - start[k]).abs().max().item() for k in want)
    assert moved > 1e-2, f"training hardly moved the weights ({moved}): the comparison would prove nothing"
    for key in want:
        torch.testing.assert_close(
            got[key], want[key], rtol=1e-9, atol=1e-11, msg=lambda m, k=key: f"{k}: {m}"
        )


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MATCHING))
def test_ddp_matches_one_process(ddp_runs, name):
    states = _states(ddp_runs, name)
    _assert_ranks_identical(states)
    _assert_trained_like(states[0], _fit(MATCHING[name], devices=1), MATCHING[name])


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RANKS_AGREE))
def test_ddp_ranks_stay_identical(ddp_runs, name):
    """Per-rank augmentation, CORAL and BatchNorm batches: weights AND running statistics agree."""
    states = _states(ddp_runs, name)
    _assert_ranks_identical(states)
    start = _state(_module(RANKS_AGREE[name]))
    assert any(not torch.equal(states[0][k], start[k]) for k in start)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(NAN_ON_RANK_1))
def test_nan_on_one_rank_stops_every_rank(ddp_runs, name):
    for rank in range(WORLD):
        message = (ddp_runs / f"{name}-rank{rank}.txt").read_text()
        assert "loss is nan at step 0" in message and "hospital(s) H2" in message, (rank, message)


@pytest.mark.slow
def test_ddp_spawn_matches_one_process():
    """The same under ``ddp_spawn``; the spawn launcher hands rank 0's weights back to this process."""
    overrides = MATCHING["agr_rand"]
    # Rank 0's weights come back by load_state_dict into THIS process's module, which Lightning's
    # 64-true never converted (that happened in the children): make it float64 here, or they are rounded.
    module = _module(overrides).double()
    _trainer(WORLD, _ddp_strategy(start_method="spawn")).fit(module, datamodule=_Data(BATCH))
    _assert_trained_like(_state(module), _fit(overrides, devices=1), overrides)


def test_coalesced_collectives_bucket_by_dtype_and_size(monkeypatch):
    """The helper behind the all-reduce: buckets of one dtype within the size cap, results copied back."""
    monkeypatch.setattr(module_mod, "_BUCKET_BYTES", 64)
    tensors = [
        torch.ones(2, 3),  # 24 bytes
        torch.ones(3, 2).t(),  # non-contiguous, 24 bytes
        torch.ones(5),  # 20 bytes: over the cap with the two before
        torch.ones(4, dtype=torch.float64),  # another dtype
        torch.ones(40),  # 160 bytes alone: reduced in place
    ]
    calls = []

    def double(flat: torch.Tensor) -> None:
        calls.append(flat.numel())
        flat.mul_(2)

    module_mod._coalesced(tensors, double)
    assert calls == [12, 5, 4, 40]
    for t in tensors:
        assert torch.equal(t, torch.full_like(t, 2.0))
