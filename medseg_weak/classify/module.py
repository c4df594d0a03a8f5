"""ClassifierModule: trains the classifier with a gradient-combination rule across hospitals.

Manual optimisation, because a surgery rule must see every hospital's gradient before the optimizer
step. Each step: one forward per hospital batch, per-hospital gradients, (under DDP) all-reduce them,
combine with the rule, write back, step. ERM takes the same per-hospital forwards and one backward of
the summed losses, which yields the erm rule's gradient without materialising per-hospital copies.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from medseg_weak.classify.augment import DomainAugment
from medseg_weak.classify.metrics import HospitalMetrics
from medseg_weak.classify.model import Classifier
from medseg_weak.classify.surgery import (
    RULES,
    GradientRule,
    assign_gradients,
    conflict_diagnostics,
    coral_penalty,
    per_hospital_gradients,
)
from medseg_weak.config import ClassifierConfig, SurgeryConfig, from_dict, to_dict
from medseg_weak.errors import MedsegError


class TrainingDiverged(MedsegError):
    """The loss became NaN or infinite; the message names the step and the hospital."""


def build_rule(cfg: SurgeryConfig) -> GradientRule:
    """Instantiate the named rule with the hyper-parameters its dataclass declares."""
    cls = RULES.get(cfg.rule)
    names = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
    return cls(**{name: getattr(cfg, name) for name in names if hasattr(cfg, name)})


def cosine_lr(base: float, epoch: int, epochs: int) -> float:
    """Cosine annealing from ``base`` (epoch 0) towards 0 (after the last epoch)."""
    return base * 0.5 * (1.0 + math.cos(math.pi * epoch / max(1, epochs)))


class ClassifierModule(L.LightningModule):
    def __init__(self, config: dict[str, Any], labels: list[str], domains: list[str], seed: int = 0) -> None:
        """``config`` is ``to_dict(ClassifierConfig)``: plain data, so checkpoints reload anywhere."""
        super().__init__()
        self.save_hyperparameters()
        self.cfg: ClassifierConfig = from_dict(ClassifierConfig, config, "classifier")
        self.labels = list(labels)
        self.domains = list(domains)
        self.model = Classifier.create(self.cfg.backbone, self.cfg.in_channels, len(labels), self.cfg.dropout)
        self.rule = build_rule(self.cfg.surgery)
        self.augment = DomainAugment(self.cfg.augment)
        self.automatic_optimization = False
        self.val_metrics = HospitalMetrics(len(labels), domains)
        self.test_metrics = HospitalMetrics(len(labels), domains)
        self._generator_seed = seed
        self._generator: torch.Generator | None = None
        self.test_predictions: list[dict[str, Any]] = []

    @classmethod
    def from_config(
        cls, cfg: ClassifierConfig, labels: list[str], domains: list[str], seed: int = 0
    ) -> ClassifierModule:
        return cls(to_dict(cfg), labels, domains, seed)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    # ------------------------------------------------------------------------------------------ train
    @property
    def generator(self) -> torch.Generator:
        """Drives augmentation and random rules. Re-seeded from (seed, rank, step) every step, so a
        run resumed from a checkpoint draws exactly what an uninterrupted run would have drawn."""
        if self._generator is None or self._generator.device != self.device:
            self._generator = torch.Generator(device=self.device)
        self._generator.manual_seed(
            self._generator_seed * 7919 + self.global_rank * 1_000_003 + self.global_step
        )
        return self._generator

    def _frozen(self) -> bool:
        return self.current_epoch < self.cfg.freeze_backbone_epochs

    def on_train_epoch_start(self) -> None:
        # Cosine learning rate as a pure function of the epoch (no scheduler state): a run resumed
        # from an end-of-epoch checkpoint uses exactly the rate an uninterrupted run would.
        lr = cosine_lr(self.cfg.lr, self.current_epoch, self.cfg.epochs)
        for group in self.optimizers().param_groups:
            group["lr"] = lr
        frozen = self._frozen()
        for p in self.model.backbone.parameters():
            p.requires_grad_(not frozen)
        if frozen:
            self.model.backbone.eval()  # frozen features should not drift through BN statistics

    def training_step(self, batch: dict[str, dict[str, Any]], batch_idx: int) -> Tensor:
        batch = batch[0] if isinstance(batch, tuple | list) else batch
        names = [d for d in batch if batch[d] is not None and len(batch[d]["label"]) > 0]
        images = [batch[d]["image"] for d in names]
        generator = self.generator
        if self.augment.enabled:
            images = self.augment(images, [batch[d].get("region") for d in names], generator)
        batches = [(x, batch[d]["label"]) for x, d in zip(images, names)]
        opt = self.optimizers()
        opt.zero_grad(set_to_none=True)
        params = [p for p in self.model.parameters() if p.requires_grad]
        diag_every = self.cfg.surgery.diagnostics_every
        want_diagnostics = diag_every > 0 and self.global_step % diag_every == 0 and len(batches) > 1
        if self.cfg.surgery.rule == "erm" and not want_diagnostics:
            losses = torch.stack([F.cross_entropy(self.model(x), y) for x, y in batches])
            self._check_finite(losses, names)
            self.manual_backward(losses.sum())
        else:
            grads, losses = per_hospital_gradients(self.model, F.cross_entropy, batches)
            self._check_finite(losses, names)
            grads = self._all_reduce(grads)
            if want_diagnostics:
                param_names = [n for n, p in self.model.named_parameters() if p.requires_grad]
                diagnostics = conflict_diagnostics(grads, param_names)
                self.log_dict({f"surgery/{k}": v for k, v in diagnostics.items()}, on_step=True)
            combined = self.rule(grads, generator=generator, losses=losses)
            assign_gradients(params, combined)
        if self.cfg.surgery.coral_weight > 0 and len(batches) > 1:
            features = [self.model.forward_features(x).mean(dim=(2, 3)) for x, _ in batches]
            self.manual_backward(self.cfg.surgery.coral_weight * coral_penalty(features))
        opt.step()
        loss = losses.mean()
        self.log(
            "train/loss",
            loss,
            prog_bar=True,
            on_step=True,
            on_epoch=True,
            batch_size=sum(len(y) for _, y in batches),
        )
        for name, value in zip(names, losses):
            self.log(f"train/{name}/loss", value, on_step=False, on_epoch=True)
        return loss

    def _check_finite(self, losses: Tensor, names: list[str]) -> None:
        bad = ~torch.isfinite(losses)
        if bool(bad.any()):
            which = ", ".join(n for n, b in zip(names, bad.tolist()) if b)
            raise TrainingDiverged(
                f"training diverged: loss is {losses[bad][0].item()} at step {self.global_step} "
                f"(epoch {self.current_epoch}) for hospital(s) {which}; lower classifier.lr or check the data"
            )

    def _all_reduce(self, grads: list[Tensor]) -> list[Tensor]:
        """Average per-hospital gradients over DDP ranks before the rule sees them."""
        world = self.trainer.world_size if self._trainer is not None else 1
        if world <= 1 or not torch.distributed.is_initialized():
            return grads
        for g in grads:
            torch.distributed.all_reduce(g)
            g.div_(world)
        return grads

    def configure_optimizers(self) -> torch.optim.Optimizer:
        cfg = self.cfg
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(self.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
        return torch.optim.AdamW(self.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    # ------------------------------------------------------------------------------------------ eval
    def _evaluate(self, batch: dict[str, Any], metrics: HospitalMetrics) -> Tensor:
        logits = self.model(batch["image"])
        probs = logits.float().softmax(dim=1)
        metrics.update(probs, batch["label"], batch["domain"])
        return probs

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, self.val_metrics)

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val", self.val_metrics)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        probs = self._evaluate(batch, self.test_metrics)
        for i in range(len(probs)):
            self.test_predictions.append(
                {
                    "index": int(batch["index"][i]),
                    "label": int(batch["label"][i]),
                    "domain": self.domains[int(batch["domain"][i])],
                    "probs": probs[i].tolist(),
                }
            )

    def on_test_epoch_start(self) -> None:
        self.test_predictions = []

    def on_test_epoch_end(self) -> None:
        self.test_results = self._log_metrics("test", self.test_metrics)

    def _log_metrics(self, stage: str, metrics: HospitalMetrics) -> dict[str, Any]:
        values = metrics.compute()
        metrics.reset()
        scalars = {f"{stage}/{k}": v for k, v in values.items() if v.numel() == 1}
        self.log_dict(scalars, sync_dist=True)
        return {k: (v.tolist() if v.numel() > 1 else float(v)) for k, v in values.items()}

    # ------------------------------------------------------------------------------------------ state
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["gradient_rule"] = self.rule.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.rule.load_state_dict(checkpoint.get("gradient_rule", {}))
