"""ClassifierModule: trains the classifier with a gradient-combination rule across hospitals.

Manual optimisation, because a surgery rule must see every hospital's gradient before the optimizer
step. Each step: one forward per hospital batch, per-hospital gradients, (under DDP) all-reduce them,
combine with the rule, write back, step. ERM takes the same per-hospital forwards and one backward of
the summed losses, which yields the erm rule's gradient without materialising per-hospital copies.

Under DDP the module does its own gradient synchronisation and keeps DDP's reducer out of the way:
  * the rules are non-linear, so per-hospital gradients must be AVERAGED OVER RANKS before the rule
    sees them (combining per rank and averaging the results is a different, wrong, update); the
    surgery path differentiates with ``torch.autograd.grad``, which DDP's reducer never sees anyway;
  * the ERM and CORAL backward passes run under the DDP wrapper's ``no_sync()`` and are averaged here,
    because DDP's reducer cannot handle them: without ``find_unused_parameters`` it fails with
    "Expected to have finished reduction in the prior iteration" as soon as a backward skips a
    parameter (the CORAL penalty never reaches the head; a frozen backbone is never reached), and a
    second backward in one step (ERM + CORAL) is not reduced at all;
  * the losses are averaged in the same collective, so every rank logs the global loss, group DRO
    keeps one set of weights, and a NaN on any rank stops every rank at once (no rank left waiting
    in a collective);
  * the rule's random draws (agr_rand's noise, pcgrad's order) come from a generator seeded
    independently of the rank, so every rank applies the same update; augmentation draws stay
    per rank (each rank augments different images).
Since every rank applies the same averaged update to the same initial weights, the replicas stay
identical. BatchNorm running statistics are the one per-rank state: like DDP's ``broadcast_buffers``
they are copied from rank 0 before validation and at the end of training.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel

from medseg_weak.classify.augment import DomainAugment
from medseg_weak.classify.metrics import HospitalMetrics
from medseg_weak.classify.model import Classifier
from medseg_weak.classify.norm_stats import HospitalStatistics, recompute_bn_statistics
from medseg_weak.classify.surgery import (
    RULES,
    GradientRule,
    assign_gradients,
    conflict_diagnostics,
    coral_penalty,
    per_hospital_gradients,
)
from medseg_weak.config import ClassifierConfig, SurgeryConfig, from_dict, to_dict
from medseg_weak.core.schedules import cosine_lr
from medseg_weak.errors import ConfigError, MedsegError

# Collectives move the tensors of one step in buckets of at most this many bytes: one call per bucket
# rather than per parameter (gloo pays a round trip per call), without a full extra copy of big models.
_BUCKET_BYTES = 32 * 2**20


class TrainingDiverged(MedsegError):
    """The loss became NaN or infinite; the message names the step and the hospital."""


def build_rule(cfg: SurgeryConfig) -> GradientRule:
    """Instantiate the named rule with the parameters given for it; the rule supplies the defaults."""
    cls = RULES.get(cfg.rule)
    try:
        return cls(**cfg.rule_parameters())
    except (TypeError, ValueError) as err:  # a parameter the rule does not take, or out of its range
        raise ConfigError(f"'{cfg.KEY}' for rule '{cfg.rule}': {err}") from None


def stream_seed(*parts: object) -> int:
    """A 63-bit seed hashed from ``parts``: different parts give unrelated streams (no arithmetic
    collisions such as rank 1 at step 0 meeting rank 0 at step 1_000_003)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class ClassifierModule(L.LightningModule):
    def __init__(self, config: dict[str, Any], labels: list[str], domains: list[str], seed: int = 0) -> None:
        """``config`` is ``to_dict(ClassifierConfig)``: plain data, so checkpoints reload anywhere."""
        super().__init__()
        self.save_hyperparameters()
        self.cfg: ClassifierConfig = from_dict(ClassifierConfig, config, "classifier")
        self.labels = list(labels)
        self.domains = list(domains)
        # in_channels 0 = the data kind's (resolved in run configs); an unresolved config is grey.
        self.model = Classifier.create(
            self.cfg.backbone, self.cfg.in_channels or 1, len(labels), self.cfg.dropout
        )
        self.rule = build_rule(self.cfg.surgery)
        self.augment = DomainAugment(self.cfg.augment)
        self.automatic_optimization = False
        self.val_metrics = HospitalMetrics(len(labels), domains)
        self.test_metrics = HospitalMetrics(len(labels), domains)
        self._generator_seed = seed
        self._generators: dict[str, torch.Generator] = {}
        self.test_predictions: list[dict[str, Any]] = []
        self._test_statistics: HospitalStatistics | None = None

    @classmethod
    def from_config(
        cls, cfg: ClassifierConfig, labels: list[str], domains: list[str], seed: int = 0
    ) -> ClassifierModule:
        return cls(to_dict(cfg), labels, domains, seed)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    # ------------------------------------------------------------------------------------------ train
    # Both generators are re-seeded from the step every step, so a run resumed from a checkpoint draws
    # exactly what an uninterrupted run would have drawn.
    @property
    def augment_generator(self) -> torch.Generator:
        """Augmentation draws: seeded from (seed, RANK, step), since each rank augments other images."""
        return self._seeded("augment", self.global_rank)

    @property
    def rule_generator(self) -> torch.Generator:
        """The rule's draws (agr_rand's noise, pcgrad's order): seeded from (seed, step) WITHOUT the
        rank. Every rank combines the same all-reduced gradients and must draw the same numbers, or the
        replicas apply different updates and drift apart; it also makes a DDP run draw what a
        single-process run draws."""
        return self._seeded("rule")

    def _seeded(self, stream: str, *parts: int) -> torch.Generator:
        generator = self._generators.get(stream)
        if generator is None or generator.device != self.device:
            generator = self._generators[stream] = torch.Generator(device=self.device)
        return generator.manual_seed(stream_seed(stream, self._generator_seed, *parts, self.global_step))

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
        # Hang-free under DDP: every collective below runs on every rank in the same order, since the
        # branches depend only on the config, the step and the hospitals in the batch (the combined
        # loader gives every rank a batch of every hospital).
        batch = batch[0] if isinstance(batch, tuple | list) else batch
        # Dropout draws from the global generator, which a checkpoint does not restore: seeded from
        # (seed, rank, step) here, a run resumed after a kill draws the masks an uninterrupted one draws.
        torch.manual_seed(stream_seed("global", self._generator_seed, self.global_rank, self.global_step))
        names = [d for d in batch if batch[d] is not None and len(batch[d]["label"]) > 0]
        images = [batch[d]["image"] for d in names]
        if self.augment.enabled:
            images = self.augment(images, [batch[d].get("region") for d in names], self.augment_generator)
        batches = [(x, batch[d]["label"]) for x, d in zip(images, names)]
        opt = self.optimizers()
        opt.zero_grad(set_to_none=True)
        params = [p for p in self.model.parameters() if p.requires_grad]
        diag_every = self.cfg.surgery.diagnostics_every
        want_diagnostics = diag_every > 0 and self.global_step % diag_every == 0 and len(batches) > 1
        # CORAL acts on the backbone's features only: with the backbone frozen it has no gradient (and
        # a backward of it would fail), so it is skipped.
        coral = self.cfg.surgery.coral_weight > 0 and len(batches) > 1 and not self._frozen()
        fast_erm = self.cfg.surgery.rule == "erm" and not want_diagnostics
        with self._without_ddp_reducer():
            if fast_erm:
                losses = torch.stack([F.cross_entropy(self.model(x), y) for x, y in batches])
                self.manual_backward(losses.sum())
                losses = losses.detach()  # averaged over ranks below, with the gradients
            else:
                grads, losses = per_hospital_gradients(self.model, F.cross_entropy, batches)
                # Average BEFORE the rule: the rules are non-linear in the per-hospital gradients.
                self._all_reduce([*grads, losses])
                self._check_finite(losses, names)
                if want_diagnostics:
                    param_names = [n for n, p in self.model.named_parameters() if p.requires_grad]
                    diagnostics = conflict_diagnostics(grads, param_names)
                    self.log_dict({f"surgery/{k}": v for k, v in diagnostics.items()}, on_step=True)
                combined = self.rule(grads, generator=self.rule_generator, losses=losses)
                assign_gradients(params, combined)
            if coral:
                features = [self.model.forward_features(x).mean(dim=(2, 3)) for x, _ in batches]
                self.manual_backward(self.cfg.surgery.coral_weight * coral_penalty(features))
        if fast_erm or coral:
            # .grad holds this rank's ERM gradient and/or CORAL gradient: average it over ranks. ERM is
            # linear, so this equals DDP's own averaging; after surgery the combined part is already
            # the same on every rank and averaging leaves it unchanged. Parameters without a gradient
            # have none on every rank (same graph everywhere), so all ranks reduce the same tensors.
            self._all_reduce([p.grad for p in params if p.grad is not None] + ([losses] if fast_erm else []))
            if fast_erm:
                self._check_finite(losses, names)
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
        for name, value, (_, y) in zip(names, losses, batches):
            self.log(f"train/{name}/loss", value, on_step=False, on_epoch=True, batch_size=len(y))
        return loss

    def _check_finite(self, losses: Tensor, names: list[str]) -> None:
        bad = ~torch.isfinite(losses)
        if bool(bad.any()):
            which = ", ".join(n for n, b in zip(names, bad.tolist()) if b)
            raise TrainingDiverged(
                f"training diverged: loss is {losses[bad][0].item()} at step {self.global_step} "
                f"(epoch {self.current_epoch}) for hospital(s) {which}; lower classifier.lr or check the data"
            )

    # ------------------------------------------------------------------------------------------ DDP
    def _ddp(self) -> DistributedDataParallel | None:
        """The DDP wrapper around this module when training on several processes, else None."""
        if self._trainer is None or self.trainer.world_size <= 1 or not dist.is_initialized():
            return None
        model = getattr(self.trainer.strategy, "model", None)
        return model if isinstance(model, DistributedDataParallel) else None

    def _without_ddp_reducer(self) -> AbstractContextManager[None]:
        """Keep DDP's reducer out of ``manual_backward``: Lightning prepares the reducer before every
        ``manual_backward`` unless the wrapper is in ``no_sync()``; we average gradients ourselves."""
        return self.trainer.strategy.block_backward_sync() if self._ddp() is not None else nullcontext()

    def _all_reduce(self, tensors: list[Tensor]) -> list[Tensor]:
        """Average ``tensors`` in place over the DDP ranks (any shapes, e.g. ``[H, *shape]``); returns them.

        Uses DDP's own process group. Sum then divide, since gloo has no AVG reduction. A no-op on
        one process.
        """
        ddp = self._ddp()
        if ddp is None:
            return tensors
        group = ddp.process_group
        world = dist.get_world_size(group)

        def average(flat: Tensor) -> None:
            dist.all_reduce(flat, group=group)
            flat.div_(world)

        _coalesced(tensors, average)
        return tensors

    def _broadcast_buffers(self) -> None:
        """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

        The ranks normalise different batches, so their running statistics drift apart; DDP would
        overwrite them with rank 0's before every forward (``broadcast_buffers``), but that happens
        only after a synchronised backward, which we never let DDP run. Doing it before validation and
        at the end of training means every rank evaluates the model rank 0 checkpoints.
        """
        ddp = self._ddp()
        if ddp is None or not ddp.broadcast_buffers:
            return
        buffers = list(self.model.buffers())
        if buffers:
            group = ddp.process_group
            source = dist.get_global_rank(group, 0) if group is not None else 0
            _coalesced(buffers, lambda flat: dist.broadcast(flat, src=source, group=group))

    def on_train_start(self) -> None:
        # Our gradient averaging assumes full parameter replicas on every rank, as DDP keeps them;
        # sharded strategies (FSDP, DeepSpeed) would need their own per-hospital reduction.
        if self.trainer.world_size > 1 and self._ddp() is None:
            raise ConfigError(
                f"'classifier.strategy': multi-process training needs a DDP strategy (ddp, ddp_spawn, ...); "
                f"got {type(self.trainer.strategy).__name__}"
            )

    def on_validation_epoch_start(self) -> None:
        if self.cfg.bn_stats == "pooled" and not self.trainer.sanity_checking:
            self._recompute_bn_statistics()
        self._broadcast_buffers()

    def _recompute_bn_statistics(self) -> None:
        """Running BatchNorm statistics recomputed as the plain average over one pass of every
        training hospital's images in manifest order (the same images, the same order, every epoch:
        a resumed run recomputes what an unbroken one did)."""
        data = getattr(self.trainer, "datamodule", None)
        if data is not None:
            loader = data.loader(data.split("train"), shuffle=False)
            recompute_bn_statistics(self.model, (batch["image"].to(self.device) for batch in loader))

    def hospital_statistics(self, loader: Iterable[dict[str, Any]]) -> HospitalStatistics | None:
        """Per-hospital BatchNorm statistics of ``loader``'s images when ``classifier.test_bn`` asks
        for them (None: evaluate with the training statistics)."""
        if self.cfg.test_bn != "hospital":
            return None
        return HospitalStatistics.from_batches(
            self.model,
            ((b["image"].to(self.device), self._hospitals(b)) for b in loader),
            self.cfg.batch_size,
        )

    def logits(self, batch: dict[str, Any], statistics: HospitalStatistics | None = None) -> Tensor:
        """The model's logits for an evaluation batch, under each image's hospital's statistics if given."""
        images = batch["image"].to(self.device)
        if statistics is None:
            return self.model(images)
        return statistics.apply(images, self._hospitals(batch), self.model)

    def _hospitals(self, batch: dict[str, Any]) -> list[str]:
        return [self.domains[int(d)] for d in batch["domain"]]

    def on_train_end(self) -> None:
        self._broadcast_buffers()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        cfg = self.cfg
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(self.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
        return torch.optim.AdamW(self.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    # ------------------------------------------------------------------------------------------ eval
    def _evaluate(
        self, batch: dict[str, Any], metrics: HospitalMetrics, statistics: HospitalStatistics | None = None
    ) -> Tensor:
        logits = self.logits(batch, statistics)
        probs = logits.float().softmax(dim=1)
        metrics.update(probs, batch["label"], batch["domain"])
        return probs

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, self.val_metrics)

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val", self.val_metrics)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        probs = self._evaluate(batch, self.test_metrics, self._test_statistics)
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
        data = getattr(self.trainer, "datamodule", None)
        self._test_statistics = self.hospital_statistics(data.test_dataloader()) if data else None

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


def _coalesced(tensors: list[Tensor], collective: Callable[[Tensor], object]) -> None:
    """Run an in-place ``collective`` over ``tensors`` in a few flat buckets and copy the results back.

    Every rank must pass the same tensors in the same order (the buckets then match). A lone
    contiguous tensor is handed over as it is, without a copy.
    """
    for bucket in _buckets(tensors):
        if len(bucket) == 1 and bucket[0].is_contiguous():
            collective(bucket[0])
            continue
        flat = torch.cat([t.reshape(-1) for t in bucket])
        collective(flat)
        offset = 0
        for t in bucket:
            t.copy_(flat[offset : offset + t.numel()].view(t.shape))
            offset += t.numel()


def _buckets(tensors: list[Tensor]) -> Iterator[list[Tensor]]:
    """Consecutive runs of tensors with one dtype and device and at most ``_BUCKET_BYTES`` in all."""
    bucket: list[Tensor] = []
    size = 0
    for t in tensors:
        nbytes = t.numel() * t.element_size()
        if bucket and (
            t.dtype != bucket[0].dtype or t.device != bucket[0].device or size + nbytes > _BUCKET_BYTES
        ):
            yield bucket
            bucket, size = [], 0
        bucket.append(t)
        size += nbytes
    if bucket:
        yield bucket
