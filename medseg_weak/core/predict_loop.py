"""What every inference stage run through Lightning's predict loop shares: the Trainer and the ranks.

CAM generation and evaluation run as ``trainer.predict`` so that Lightning's strategies (DDP over
GPUs and nodes, ``ddp_spawn``, torchrun / SLURM environments) place them, instead of home-made
sharding. For prediction Lightning gives each rank an ``UnrepeatedDistributedSamplerWrapper``: rank
r gets positions r, r + W, ... of the loader's order and, unlike training's ``DistributedSampler``,
no index is repeated to even out the ranks, so every image is handled by exactly one rank.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import lightning as L
import torch.distributed as dist

from medseg_weak.stage_trainer import quiet_lightning


def parse_devices(devices: str) -> int | str:
    """A config's ``devices`` for the Trainer: "2" means two devices; "auto", "0,1", "-1" stay text."""
    return int(devices) if devices.isdigit() else devices


class Placement(Protocol):
    """Where a loop runs: the config sections of inference stages (``cams``, ``eval``) have these."""

    accelerator: str
    devices: str
    strategy: str
    num_nodes: int


def predict_trainer(placement: Placement, default_root_dir: Path | None = None) -> L.Trainer:
    """A Trainer for ``trainer.predict`` only: no logger, checkpoints, summary or progress bar.

    ``inference_mode=False``: the predict loop then runs under ``torch.no_grad()``, which a
    ``predict_step`` can leave with ``torch.enable_grad()`` (Grad-CAM needs gradients); under
    ``torch.inference_mode()`` tensors could never take part in autograd."""
    quiet_lightning()
    return L.Trainer(
        accelerator=placement.accelerator,
        devices=parse_devices(placement.devices),
        strategy=placement.strategy,
        num_nodes=placement.num_nodes,
        inference_mode=False,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        default_root_dir=default_root_dir,
    )


def runs_in_one_process(trainer: L.Trainer) -> bool:
    """True when the loop runs in this process alone (no DDP ranks), so that callbacks may hold
    objects that cannot cross process boundaries (a terminal progress bar)."""
    return trainer.num_devices * trainer.num_nodes == 1


def gather_to_rank_zero(obj: Any) -> list[Any] | None:
    """Every rank's ``obj``, in rank order, on rank 0 (None on the other ranks); ``[obj]`` without
    a process group. Every rank must call it (a collective)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    gathered: list[Any] | None = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(obj, gathered, dst=0)
    return gathered
