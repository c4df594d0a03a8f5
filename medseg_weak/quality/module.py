"""``QualityModule``: Lightning wiring of the quality model, its losses and its EyeQ metrics.

Loss = cross-entropy on the grade + ``mask_weight`` x (BCE + soft Dice, smp's multilabel
``DiceLoss``) on the degradation masks of the images that have one. The metric maths lives in
:mod:`medseg_weak.quality.metrics`; this module only feeds it batches.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.classification import MultilabelF1Score

from medseg_weak.classify.module import stream_seed
from medseg_weak.config import QualityConfig, from_dict, to_dict
from medseg_weak.core.schedules import cosine_lr
from medseg_weak.quality.data import COLOUR_FUNDUS, mask_channels
from medseg_weak.quality.metrics import eyeq_by_domain, scalars
from medseg_weak.quality.model import QualityNet

#: Written into every checkpoint so ``predict`` and the stages can tell a quality model from others.
CHECKPOINT_KIND = "quality"


class QualityModule(L.LightningModule):
    """Batches: ``image``, ``label``, ``domain``, ``index``, ``degradation`` [B,C,H,W], ``has_mask``."""

    def __init__(
        self, config: dict[str, Any], labels: list[str], domains: list[str], image_size: int, seed: int = 0
    ) -> None:
        """``config`` is ``to_dict(QualityConfig)``: plain data, so checkpoints reload anywhere.
        ``image_size`` and the preprocessing are stored so that a checkpoint alone can grade new photos."""
        super().__init__()
        self.save_hyperparameters()
        self.cfg: QualityConfig = from_dict(QualityConfig, config, "quality")
        self.labels = list(labels)
        self.domains = list(domains)
        self.image_size = image_size
        self.preprocess = COLOUR_FUNDUS
        self.mask_names = mask_channels(self.cfg.mask_target)
        self.model = QualityNet(self.cfg, len(labels), len(self.mask_names))
        self.train_masks = self.cfg.mask_weight > 0
        if self.train_masks:
            import segmentation_models_pytorch as smp

            self.dice_loss = smp.losses.DiceLoss(mode="multilabel", from_logits=True)
            # Pixel Dice summed over the epoch per channel; a channel empty in truth and prediction
            # scores 1, as medseg_weak.core.overlap decides for empty masks.
            self.val_dice = MultilabelF1Score(len(self.mask_names), average="none", zero_division=1)
            self.test_dice = MultilabelF1Score(len(self.mask_names), average="none", zero_division=1)
        self._outputs: dict[str, list[Tensor]] = {}
        self.test_results: dict[str, Any] = {}
        self.test_predictions: list[dict[str, Any]] = []

    @classmethod
    def from_config(
        cls, cfg: QualityConfig, labels: list[str], domains: list[str], image_size: int, seed: int = 0
    ) -> QualityModule:
        return cls(to_dict(cfg), labels, domains, image_size, seed)

    def forward(self, x: Tensor) -> Tensor:
        """Grade logits ``[B, classes]``."""
        return self.model(x)

    # ------------------------------------------------------------------------------------------ train
    def on_train_epoch_start(self) -> None:
        # Cosine learning rate as a pure function of the epoch (no scheduler state): a run resumed
        # from an end-of-epoch checkpoint uses exactly the rate an uninterrupted run would.
        lr = cosine_lr(self.cfg.lr, self.current_epoch, self.cfg.epochs)
        for group in self.optimizers().param_groups:
            group["lr"] = lr

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # Dropout draws from the global generator, which Lightning does not checkpoint (and which the
        # loops draw from between epochs): re-seeding it from (seed, step) before every step lets a run
        # resumed from last.ckpt end with exactly the weights of an unbroken one.
        torch.manual_seed(stream_seed("quality-step", self.hparams.seed, self.global_step))

    def _losses(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """(total loss, grade logits, degradation logits or None, grade loss)."""
        if not self.train_masks:
            logits = self.model(batch["image"])
            grade = F.cross_entropy(logits, batch["label"])
            return grade, logits, None, grade
        logits, masks = self.model.forward_all(batch["image"])
        grade = F.cross_entropy(logits, batch["label"])
        has = batch["has_mask"]
        if not bool(has.any()):
            # Zero-weighted, not skipped: every parameter keeps a gradient path (DDP needs it).
            return grade + 0.0 * masks.sum(), logits, masks, grade
        pred, target = masks[has].float(), batch["degradation"][has]
        mask_loss = F.binary_cross_entropy_with_logits(pred, target) + self.dice_loss(pred, target)
        return grade + self.cfg.mask_weight * mask_loss, logits, masks, grade

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        loss, _, _, grade = self._losses(batch)
        n = len(batch["label"])
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=n)
        self.log("train/grade_loss", grade, on_step=False, on_epoch=True, batch_size=n)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)

    # ------------------------------------------------------------------------------------------ eval
    def _evaluate(self, batch: dict[str, Any], dice: MultilabelF1Score | None) -> tuple[Tensor, Tensor]:
        loss, logits, masks, _ = self._losses(batch)
        probs = logits.float().softmax(dim=1)
        for name, value in (("probs", probs), ("label", batch["label"]), ("domain", batch["domain"])):
            self._outputs.setdefault(name, []).append(value.detach())
        has = batch["has_mask"]
        if dice is not None and masks is not None and bool(has.any()):
            dice.update(torch.sigmoid(masks[has].float()), batch["degradation"][has].long())
        return loss, probs

    def _gathered(self) -> dict[str, Tensor]:
        out = {name: torch.cat(values) for name, values in self._outputs.items()}
        self._outputs = {}
        if self.trainer.world_size > 1:  # every rank reports the metrics of the whole split
            out = {name: self.all_gather(v).flatten(0, 1) for name, v in out.items()}
        return out

    def _epoch_metrics(self, dice: MultilabelF1Score | None) -> dict[str, Any]:
        seen = self._gathered()
        if not seen:
            return {}
        metrics = eyeq_by_domain(seen["probs"], seen["label"], seen["domain"], self.labels, self.domains)
        if dice is not None and dice.update_count > 0:
            per_channel = dice.compute()
            metrics["mask_dice"] = float(per_channel.mean())
            metrics.update({f"mask_dice_{n}": float(v) for n, v in zip(self.mask_names, per_channel)})
        if dice is not None:
            dice.reset()
        return metrics

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        loss, _ = self._evaluate(batch, self.val_dice if self.train_masks else None)
        self.log("val/loss", loss, on_epoch=True, batch_size=len(batch["label"]), sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        metrics = self._epoch_metrics(self.val_dice if self.train_masks else None)
        # NaN values are logged too: a NaN monitor (a one-class validation split) never improves,
        # whereas a missing one would stop the checkpoint callback.
        self.log_dict({f"val/{k}": float(v) for k, v in metrics.items() if not isinstance(v, list)})

    def on_test_epoch_start(self) -> None:
        self.test_predictions = []

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        _, probs = self._evaluate(batch, self.test_dice if self.train_masks else None)
        self.test_predictions += [
            {"index": int(i), "probs": p.tolist()} for i, p in zip(batch["index"], probs.cpu())
        ]

    def on_test_epoch_end(self) -> None:
        self.test_results = self._epoch_metrics(self.test_dice if self.train_masks else None)
        self.log_dict({f"test/{k}": v for k, v in scalars(self.test_results).items()})

    # ------------------------------------------------------------------------------------------ state
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["medseg_kind"] = CHECKPOINT_KIND
