"""Stage 3: the segmenter (an smp model) trained on CAM pseudo-masks, and its thin Lightning wrapper.

The math lives in pure functions (``medseg_weak.segment.losses``, :func:`self_train_targets`,
``cosine_lr``); :class:`SegmenterModule` only wires them to batches, the optimizer and the logger.
No weights are ever downloaded: encoders start random or from a local file.
"""

from __future__ import annotations

import difflib
import inspect
import logging
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics.classification import BinaryF1Score

from medseg_weak.config import SegmenterConfig, from_dict, to_dict
from medseg_weak.core.schedules import cosine_lr
from medseg_weak.core.weights import load_matching_weights
from medseg_weak.errors import ConfigError
from medseg_weak.segment.losses import IGNORE, LOSSES, LossFn, foreground_logit, size_penalty

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- model
def create_segmenter(cfg: SegmenterConfig, load_encoder_weights: bool = True) -> nn.Module:
    """Build ``cfg.arch`` with ``cfg.encoder`` (random weights; one output channel = foreground logit).

    With ``load_encoder_weights`` and a ``cfg.encoder_weights_path``, the encoder is then loaded from
    that local file (see :func:`load_encoder_weights_from`).
    """
    import segmentation_models_pytorch as smp

    archs = smp.MODEL_ARCHITECTURES_MAPPING
    arch = cfg.arch.lower()
    if arch not in archs:
        raise ConfigError(f"'segmenter.arch': unknown architecture '{cfg.arch}'; valid: {', '.join(archs)}")
    encoders = smp.encoders.get_encoder_names()
    if cfg.encoder not in encoders:
        close = difflib.get_close_matches(cfg.encoder, encoders, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(
            f"'segmenter.encoder': unknown smp encoder '{cfg.encoder}'{hint}; "
            f"valid: {', '.join(sorted(encoders))}"
        )
    kwargs: dict[str, Any] = {"encoder_depth": cfg.encoder_depth}
    # Only unet-like decoders take one channel count per stage; deeplab / pan / upernet take a single
    # int and fpn / linknet none, so ``decoder_channels`` is passed only where the default is a sequence.
    decoder_param = inspect.signature(archs[arch].__init__).parameters.get("decoder_channels")
    if decoder_param is not None and isinstance(decoder_param.default, tuple | list):
        if len(cfg.decoder_channels) != cfg.encoder_depth:
            raise ConfigError(
                f"'segmenter.decoder_channels': {arch} needs one channel count per encoder stage "
                f"({cfg.encoder_depth}, segmenter.encoder_depth); got {list(cfg.decoder_channels)}"
            )
        kwargs["decoder_channels"] = list(cfg.decoder_channels)
    if arch == "fpn" and cfg.encoder_depth < 3:
        raise ConfigError(f"'segmenter.encoder_depth': fpn needs at least 3; got {cfg.encoder_depth}")
    if arch == "fpn":
        # smp's FPN reads the 4 deepest features, whose finest one has stride 2^(depth - 2), yet always
        # upsamples by 4: below depth 5 the output would be larger than the input (256 px for 64).
        kwargs["upsampling"] = 2 ** (cfg.encoder_depth - 3)
    model = smp.create_model(
        arch,
        encoder_name=cfg.encoder,
        encoder_weights=None,  # never download
        in_channels=cfg.in_channels or 1,  # 0 = the data kind's; unresolved configs are grey
        classes=1,
        **kwargs,
    )
    if load_encoder_weights and cfg.encoder_weights_path:
        load_encoder_weights_from(model.encoder, cfg.encoder_weights_path)
    return model


def load_encoder_weights_from(encoder: nn.Module, path: str | Path) -> tuple[list[str], list[str]]:
    """Load a local state dict into an smp ``encoder``; returns (missing, unexpected) keys.

    Accepts an smp encoder or whole smp model (``encoder.`` prefix), our Lightning checkpoints
    (``model.encoder.``, or a classifier's ``model.backbone.body.`` when it was trained with backbone
    ``smp:<encoder>``) and timm / torchvision files (:mod:`medseg_weak.core.weights`).
    """
    return load_matching_weights(encoder, path, "'segmenter.encoder_weights_path'")


def build_loss(cfg: SegmenterConfig) -> LossFn:
    """The configured loss with the parameters given for it bound; the loss supplies the defaults.

    A loss's keyword ``name`` is the config field ``name`` (``dice_weight``) or ``<loss>_<name>``
    (``gce_q``), listed in ``SegmenterConfig.LOSS_PARAMETERS``.
    """
    fn = LOSSES.get(cfg.loss)
    return partial(fn, **cfg.loss_parameters())


# ----------------------------------------------------------------------------------------- self-training
def self_train_targets(probs: Tensor, cam_targets: Tensor, confidence: float) -> Tensor:
    """One round of self-training: new ``[B, H, W]`` uint8 targets (0, 1, 255) from the segmenter's
    probabilities ``probs`` and the CAM pseudo-mask ``cam_targets``.

    Per pixel, with ``c = confidence`` (the segmenter is confident when ``p >= c`` -> 1 or
    ``p <= 1 - c`` -> 0; the CAM mask is confident wherever it is not 255):

    ===================  ====================  =====================
    segmenter            CAM mask              new target
    ===================  ====================  =====================
    confident            255                   segmenter's label
    not confident        0 / 1                 CAM label
    confident            same label            that label
    confident            other label           255
    not confident        255                   255
    ===================  ====================  =====================

    A confident disagreement is ignored rather than resolved either way: trusting the segmenter there
    lets it confirm its own mistakes (confirmation bias), trusting the CAM keeps exactly the noise
    that self-training is meant to remove.
    """
    if probs.shape != cam_targets.shape:
        raise ValueError(f"probs {tuple(probs.shape)} and cam_targets {tuple(cam_targets.shape)} differ")
    if not 0.5 < confidence <= 1.0:
        raise ValueError(f"confidence must be in (0.5, 1]; got {confidence}")
    cam = cam_targets.to(torch.uint8)
    seg_positive = probs >= confidence
    seg_confident = seg_positive | (probs <= 1.0 - confidence)
    seg_label = seg_positive.to(torch.uint8)
    cam_labelled = cam != IGNORE
    out = torch.full_like(cam, IGNORE)
    out = torch.where(cam_labelled & ~seg_confident, cam, out)
    out = torch.where(seg_confident & ~cam_labelled, seg_label, out)
    agree = seg_confident & cam_labelled & (cam == seg_label)
    return torch.where(agree, seg_label, out)


# ------------------------------------------------------------------------------------------- Lightning
class SegmenterModule(L.LightningModule):
    """Trains the segmenter on batches ``{"image": [B,C,H,W] float, "target": [B,H,W] uint8 (0/1/255)}``
    with optional ``"mask"`` (ground truth 0/1, validation only) and ``"domain"``."""

    def __init__(self, config: dict[str, Any]) -> None:
        """``config`` is ``to_dict(SegmenterConfig)``: plain data, so checkpoints reload anywhere.

        The encoder weights file is NOT read here: a checkpoint's weights supersede it, and reloading a
        checkpoint must not need that file. Use :meth:`from_config` to start a fresh run from it.
        """
        super().__init__()
        self.save_hyperparameters()
        self.cfg: SegmenterConfig = from_dict(SegmenterConfig, config, "segmenter")
        self.model = create_segmenter(self.cfg, load_encoder_weights=False)
        self.loss_fn = build_loss(self.cfg)
        # Binary F1 over pixels is the Dice of the thresholded prediction, summed over the whole epoch
        # (not a mean of per-batch Dice); torchmetrics also syncs it across DDP ranks.
        self.val_dice = BinaryF1Score(ignore_index=IGNORE)
        self.val_gt_dice = BinaryF1Score()

    @classmethod
    def from_config(cls, cfg: SegmenterConfig) -> SegmenterModule:
        """A module for a fresh run: random decoder, encoder from ``cfg.encoder_weights_path`` if set."""
        module = cls(to_dict(cfg))
        if cfg.encoder_weights_path:
            load_encoder_weights_from(module.model.encoder, cfg.encoder_weights_path)
        return module

    def forward(self, x: Tensor) -> Tensor:
        """Foreground logits ``[B, 1, H, W]``."""
        return self.model(x)

    def on_train_epoch_start(self) -> None:
        # Cosine learning rate as a pure function of the epoch (no scheduler state): a run resumed
        # from an end-of-epoch checkpoint uses exactly the rate an uninterrupted run would.
        lr = cosine_lr(self.cfg.lr, self.current_epoch, self.cfg.epochs)
        for group in self.optimizers().param_groups:
            group["lr"] = lr

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        # Anything drawing from the global generator (which a checkpoint does not restore) draws the
        # same in a run resumed after a kill as in an uninterrupted one: seeded from (rank, step).
        torch.manual_seed(hash((self.global_rank, self.global_step)) & 0x7FFF_FFFF)
        images = self._augment(batch["image"], batch.get("region"))
        logits = self(images)
        loss = self.loss_fn(logits, batch["target"])
        n = len(logits)
        if self.cfg.size_prior and self.cfg.size_weight > 0 and "size_bounds" in batch:
            size = size_penalty(logits, batch["region"], batch["size_bounds"])
            self.log("train/size_penalty", size, on_step=False, on_epoch=True, batch_size=n)
            loss = loss + self.cfg.size_weight * size
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=n)
        return loss

    def _augment(self, images: Tensor, region: Tensor | None) -> Tensor:
        """``segmenter.augment``: per-image intensity curves (the targets stay valid), drawn from a
        generator seeded by (rank, step) so a resumed run draws what an uninterrupted one draws."""
        aug = self.cfg.augment
        if not aug.enabled:
            return images
        from medseg_weak.classify.augment import random_contrast, random_gamma
        from medseg_weak.classify.module import stream_seed

        generator = torch.Generator().manual_seed(stream_seed("augment", self.global_rank, self.global_step))
        if aug.gamma > 0:
            images = random_gamma(images, aug.gamma, generator)
        if aug.contrast > 0:
            images = random_contrast(images, aug.contrast, generator, mask=region)
        return images

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        target = batch["target"]
        logits = self(batch["image"])
        probs = torch.sigmoid(foreground_logit(logits, target).float())
        n = len(logits)
        self.log("val/loss", self.loss_fn(logits, target), on_epoch=True, batch_size=n, sync_dist=True)
        self.val_dice(probs, target.long())
        self.log("val/dice", self.val_dice, on_step=False, on_epoch=True, prog_bar=True, batch_size=n)
        if batch.get("mask") is not None:
            self.val_gt_dice(probs, batch["mask"].long())
            self.log("val/gt_dice", self.val_gt_dice, on_step=False, on_epoch=True, batch_size=n)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        """Foreground probabilities ``[B, H, W]`` (the input of :func:`self_train_targets`)."""
        return torch.sigmoid(self(batch["image"])[:, 0].float())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
