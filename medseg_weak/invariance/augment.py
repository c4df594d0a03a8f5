"""Training augmentation by a transformation set: each training image replaced by T_p(x), p drawn at random.

One responsibility: the invariance matrix's training side. The classifier a matrix row trains sees
every image under a member of one transformation set (the same sets the matrix measures with), so
"trained with rotation, measured under rotation" means one family of images on both sides.

The draws are seeded from (seed, rank, step, hospital), never from the global generator, so a rerun
(or a run resumed from a checkpoint) draws what an uninterrupted one drew.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from medseg_weak.classify.module import stream_seed
from medseg_weak.invariance.transforms import TransformationSet

__all__ = ["TransformationAugment", "augment_images"]


def augment_images(
    images: torch.Tensor,
    tset: TransformationSet,
    generator: torch.Generator,
    region: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``images`` [B, C, H, W] with image i replaced by ``tset[p_i](images[i])``, p_i uniform over the set.

    ``region`` [B, H, W] (the breast / fundus mask) moves with the pixels under spatial sets, so
    region-aware code downstream still sees the region of the image it gets."""
    choice = torch.randint(len(tset), (images.shape[0],), generator=generator).to(images.device)
    out = images.clone()
    moved = region.clone() if region is not None else None
    for p in torch.unique(choice).tolist():
        rows = choice == p
        t = tset[p]
        out[rows] = t(images[rows]).to(images.dtype)
        if moved is not None and t.spatial:
            warped = t.on_map(region[rows].unsqueeze(1).float()).squeeze(1)
            moved[rows] = (warped > 0.5).to(region.dtype)
    return out, moved


class TransformationAugment(L.Callback):
    """Replace each training image by T_p(x) before the training step sees the batch.

    ``on_train_batch_start`` runs after the batch reached the device and before ``training_step``,
    on the very dict the step reads, so the classifier's own code stays untouched. A set whose members
    are all the identity (``identity``) changes nothing and draws nothing.
    """

    def __init__(self, tset: TransformationSet, seed: int) -> None:
        self.tset = tset
        self.seed = seed
        self.enabled = any(p != tset.identity_param for p in tset.params) and tset.name != "identity"

    @property
    def name(self) -> str:
        return self.tset.name

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if not self.enabled:
            return
        batch = batch[0] if isinstance(batch, tuple | list) else batch
        for h, domain in enumerate(sorted(batch)):
            part = batch[domain]
            if part is None or len(part["image"]) == 0:
                continue
            seed = stream_seed(
                "matrix", self.tset.name, self.seed, trainer.global_rank, trainer.global_step, h
            )
            generator = torch.Generator().manual_seed(seed)  # CPU draws: the same on every device
            part["image"], region = augment_images(part["image"], self.tset, generator, part.get("region"))
            if region is not None:
                part["region"] = region
