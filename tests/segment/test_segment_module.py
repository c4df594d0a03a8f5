"""Segmenter: losses with ignored pixels, model creation, local encoder weights, self-training, training."""

from __future__ import annotations

import dataclasses
import inspect
import math

import lightning as L
import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from medseg_weak.config import Config, to_dict
from medseg_weak.errors import ConfigError, InputError, RegistryError
from medseg_weak.segment.losses import (
    IGNORE,
    LOSSES,
    generalized_ce_loss,
    masked_bce_loss,
    masked_dice_ce_loss,
    masked_soft_dice_loss,
    size_penalty,
)
from medseg_weak.segment.module import (
    SegmenterConfig,
    SegmenterModule,
    build_loss,
    create_segmenter,
    load_encoder_weights_from,
    self_train_targets,
)
from medseg_weak.segment.stage import check_segmenter
from medseg_weak.stages import DataSummary

DATA = DataSummary("test", ("A", "B", "C", "D"), ("H1",), True)
TINY = {"encoder": "resnet18", "encoder_depth": 3, "decoder_channels": (32, 16, 8)}


def _noisy_batch(seed: int = 0, shape: tuple[int, ...] = (2, 8, 8)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn((shape[0], 1, *shape[1:]), generator=g)
    target = torch.randint(0, 2, shape, generator=g).to(torch.uint8)
    target[torch.rand(shape, generator=g) < 0.3] = IGNORE
    return logits, target


# ------------------------------------------------------------------------------------------------ losses
def test_dice_known_values_and_ignore():
    big = 20.0
    # Prediction [1, 1, 1, 1] vs target [1, 1, 0, 0]: Dice 2 * 2 / (4 + 2) = 2/3 (smp's known value).
    logits = torch.full((1, 1, 1, 4), big)
    target = torch.tensor([[[1, 1, 0, 0]]], dtype=torch.uint8)
    assert masked_soft_dice_loss(logits, target).item() == pytest.approx(1 / 3, abs=1e-6)
    # Two extra ignored pixels with confident wrong logits change nothing.
    logits6 = torch.cat([logits, torch.full((1, 1, 1, 2), big)], dim=3)
    target6 = torch.tensor([[[1, 1, 0, 0, IGNORE, IGNORE]]], dtype=torch.uint8)
    assert masked_soft_dice_loss(logits6, target6).item() == pytest.approx(1 / 3, abs=1e-6)
    # An all-correct prediction has (near) zero Dice, BCE and combined loss.
    target_ok = torch.tensor([[[1, 0, IGNORE, 1]]], dtype=torch.uint8)
    logits_ok = torch.tensor([[[[big, -big, big, big]]]])
    assert masked_soft_dice_loss(logits_ok, target_ok).item() < 1e-6
    assert masked_dice_ce_loss(logits_ok, target_ok).item() < 1e-6
    # Only ignored pixels: the loss is 0 (no NaN from an empty mean).
    all_ignored = torch.full((1, 1, 4), IGNORE, dtype=torch.uint8)
    assert masked_dice_ce_loss(torch.randn(1, 1, 1, 4), all_ignored).item() == 0.0


def test_dice_matches_smp_and_bce_matches_torch():
    logits, target = _noisy_batch(1)
    ours = masked_soft_dice_loss(logits, target)
    theirs = smp.losses.DiceLoss("binary", from_logits=True, ignore_index=IGNORE)(logits, target)
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-6)
    valid = target != IGNORE
    expected = F.binary_cross_entropy_with_logits(logits[:, 0][valid], target[valid].float())
    assert masked_bce_loss(logits, target).item() == pytest.approx(expected.item(), abs=1e-6)
    combined = masked_dice_ce_loss(logits, target, dice_weight=0.5, ce_weight=2.0)
    assert combined.item() == pytest.approx(0.5 * ours.item() + 2.0 * expected.item(), abs=1e-6)


def test_two_channel_logits_equal_softmax_cross_entropy():
    logits, target = _noisy_batch(2)
    two = torch.cat([torch.randn_like(logits), torch.randn_like(logits)], dim=1)
    one = two[:, 1:] - two[:, :1]
    expected = F.cross_entropy(two, target.long(), ignore_index=IGNORE)
    assert masked_bce_loss(two, target).item() == pytest.approx(expected.item(), abs=1e-5)
    for name in LOSSES:
        fn = LOSSES.get(name)
        assert fn(two, target).item() == pytest.approx(fn(one, target).item(), abs=1e-5)


@pytest.mark.parametrize("name", LOSSES.names())
def test_every_loss_ignores_255_in_value_and_gradient(name):
    fn = LOSSES.get(name)
    logits, target = _noisy_batch(3)
    ignored = (target == IGNORE).unsqueeze(1)
    changed = torch.where(ignored, logits + 50 * torch.randn_like(logits), logits)
    assert torch.isfinite(fn(logits, target))
    assert fn(changed, target).item() == pytest.approx(fn(logits, target).item(), abs=1e-6)
    leaf = logits.clone().requires_grad_(True)
    fn(leaf, target).backward()
    assert torch.all(leaf.grad[ignored] == 0)
    assert leaf.grad[~ignored].abs().sum() > 0


def test_gce_known_values():
    logits, target = _noisy_batch(4)
    valid = target != IGNORE
    p = torch.sigmoid(logits[:, 0])[valid]
    y = target[valid].float()
    mae = (y - p).abs().mean()
    assert generalized_ce_loss(logits, target, q=1.0).item() == pytest.approx(mae.item(), abs=1e-6)
    bce = masked_bce_loss(logits, target)
    assert generalized_ce_loss(logits, target, q=1e-4).item() == pytest.approx(bce.item(), rel=1e-3)
    # p_y = sigmoid(0) = 1/2 everywhere: (1 - 0.5 ** 0.5) / 0.5 = 2 - sqrt(2).
    zero = torch.zeros(1, 1, 2, 2)
    labels = torch.tensor([[[0, 1], [IGNORE, 1]]], dtype=torch.uint8)
    assert generalized_ce_loss(zero, labels, q=0.5).item() == pytest.approx(2 - math.sqrt(2), abs=1e-6)
    with pytest.raises(ValueError, match="q"):
        generalized_ce_loss(zero, labels, q=0.0)


def test_loss_registry_and_shape_errors():
    with pytest.raises(RegistryError, match="dice_ce"):
        LOSSES.get("dise_ce")
    with pytest.raises(ConfigError, match=r"segmenter.loss.*dice_ce"):
        check_segmenter(Config(segmenter=SegmenterConfig(loss="dise_ce")), DATA)
    with pytest.raises(ValueError, match="does not match"):
        masked_dice_ce_loss(torch.zeros(1, 1, 4, 4), torch.zeros(1, 8, 8, dtype=torch.uint8))


@pytest.mark.parametrize("name", LOSSES.names())
def test_build_loss_binds_every_parameter_from_the_config(name):
    # A loss parameter without a config field would silently keep its default: fail here instead.
    params = list(inspect.signature(LOSSES.get(name)).parameters)[2:]
    owned = {field for field, loss in SegmenterConfig.LOSS_PARAMETERS.items() if loss == name}
    assert {p if p in owned else f"{name}_{p}" for p in params} == owned
    given = {"gce": {"gce_q": 1.0}, "dice_ce": {"dice_weight": 0.0, "ce_weight": 1.0}}[name]
    bound = build_loss(SegmenterConfig(loss=name, **given))
    logits, target = _noisy_batch(5)
    expected = (
        generalized_ce_loss(logits, target, q=1.0) if name == "gce" else masked_bce_loss(logits, target)
    )
    assert bound(logits, target).item() == pytest.approx(expected.item(), abs=1e-6)


def test_a_loss_parameter_under_another_loss_is_refused():
    with pytest.raises(ConfigError, match=r"'segmenter\.gce_q'.*setting of loss 'gce'.*'dice_ce'"):
        SegmenterConfig(loss="dice_ce", gce_q=0.5)


# ------------------------------------------------------------------------------------------------ model
@pytest.mark.parametrize("arch", ["unet", "fpn"])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_create_segmenter_output_shape(arch, in_channels):
    model = create_segmenter(SegmenterConfig(arch=arch, in_channels=in_channels, **TINY)).eval()
    with torch.no_grad():
        out = model(torch.randn(2, in_channels, 64, 64))
    assert out.shape == (2, 1, 64, 64)


def test_create_segmenter_errors():
    with pytest.raises(ConfigError, match=r"segmenter.arch.*unet"):
        create_segmenter(SegmenterConfig(arch="unte", **TINY))
    with pytest.raises(ConfigError, match=r"segmenter.encoder.*resnet18"):
        create_segmenter(SegmenterConfig(arch="unet", **{**TINY, "encoder": "resnet181"}))
    with pytest.raises(ConfigError, match=r"segmenter.decoder_channels"):
        create_segmenter(SegmenterConfig(encoder_depth=3, decoder_channels=(32, 16)))
    with pytest.raises(ConfigError, match=r"segmenter\.encoder_depth.*fpn"):
        create_segmenter(SegmenterConfig(arch="fpn", encoder_depth=2, decoder_channels=(8, 8)))


def test_local_encoder_weights_are_loaded(tmp_path):
    cfg = SegmenterConfig(**TINY)
    source = create_segmenter(cfg)
    # A whole smp model's state dict: keys carry an ``encoder.`` prefix that the loader strips.
    path = tmp_path / "model.pt"
    torch.save(source.state_dict(), path)
    fresh = create_segmenter(dataclasses.replace(cfg, encoder_weights_path=str(path)))
    for key, value in source.encoder.state_dict().items():
        assert torch.equal(fresh.encoder.state_dict()[key], value), key
    assert not torch.equal(
        fresh.decoder.state_dict()["blocks.0.conv1.0.weight"],
        source.decoder.state_dict()["blocks.0.conv1.0.weight"],
    )
    # The module reads the file only through from_config (a checkpoint reload never needs it).
    module = SegmenterModule.from_config(dataclasses.replace(cfg, encoder_weights_path=str(path)))
    assert torch.equal(module.model.encoder.conv1.weight, source.encoder.conv1.weight)

    # A classifier trained with backbone smp:resnet18 (Lightning checkpoint) seeds the segmenter's encoder.
    from medseg_weak.classify.model import Classifier

    classifier = Classifier.create("smp:resnet18", in_channels=1, num_classes=2)
    ckpt = tmp_path / "classifier.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in classifier.state_dict().items()}}, ckpt)
    missing, _ = load_encoder_weights_from(fresh.encoder, ckpt)
    assert not missing
    assert torch.equal(fresh.encoder.conv1.weight, classifier.backbone.body.conv1.weight)

    with pytest.raises(InputError, match=r"not found.*encoder_weights_path"):
        load_encoder_weights_from(fresh.encoder, tmp_path / "missing.pt")
    unrelated = tmp_path / "unrelated.pt"
    torch.save({"head.weight": torch.zeros(3, 3)}, unrelated)
    with pytest.raises(InputError, match=r"no tensor matches.*encoder_weights_path"):
        load_encoder_weights_from(fresh.encoder, unrelated)


# ----------------------------------------------------------------------------------------- self-training
def test_self_train_targets_cases():
    c = 0.9
    probs = torch.tensor([[0.95, 0.95, 0.05, 0.05, 0.5, 0.5, 0.95, 0.5, 0.9, 0.1]])
    cam = torch.tensor([[IGNORE, 1, 0, 1, 0, 1, 0, IGNORE, IGNORE, IGNORE]], dtype=torch.uint8)
    expected = torch.tensor(
        [
            [
                1,  # confident seg, unlabelled CAM -> seg
                1,  # both agree
                0,  # both agree
                IGNORE,  # confident disagreement
                0,  # unsure seg keeps the CAM label
                1,
                IGNORE,  # confident disagreement
                IGNORE,  # neither is confident
                1,  # p == c counts as confident (>=)
                0,  # p == 1 - c counts as confident (<=)
            ]
        ],
        dtype=torch.uint8,
    )
    out = self_train_targets(probs, cam, c)
    assert out.dtype == torch.uint8
    assert torch.equal(out, expected)
    with pytest.raises(ValueError, match="confidence"):
        self_train_targets(probs, cam, 0.5)
    with pytest.raises(ValueError, match="differ"):
        self_train_targets(probs[:, :3], cam, c)


# ------------------------------------------------------------------------------------------------ config
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("encoder_depth", 0),
        ("decoder_channels", ()),
        ("in_channels", -1),
        ("gce_q", 0.0),
        ("lr", 0.0),
        ("weight_decay", -1.0),
        ("epochs", 0),
        ("batch_size", 0),
        ("self_training_rounds", -1),
        ("confidence", 0.5),
        ("monitor", ""),
        ("dice_weight", -1.0),
        ("patience", -1),
    ],
)
def test_config_validation(field, value):
    with pytest.raises(ConfigError, match=f"segmenter.{field}"):
        SegmenterConfig(**{field: value})


@pytest.mark.parametrize(("field", "value"), [("gamma", -0.1), ("gamma", 3.0), ("contrast", 2.5)])
def test_augment_config_validation(field, value):
    from medseg_weak.config import IntensityAugmentConfig

    with pytest.raises(ConfigError, match=f"segmenter.augment.{field}"):
        IntensityAugmentConfig(**{field: value})


def test_intensity_augmentation_is_seeded_by_step_and_keeps_the_background():
    from medseg_weak.config import IntensityAugmentConfig

    cfg = SegmenterConfig(**TINY, augment=IntensityAugmentConfig(gamma=0.5, contrast=0.5))
    module = SegmenterModule(to_dict(cfg))
    g = torch.Generator().manual_seed(0)
    images = torch.rand(4, 1, 16, 16, generator=g)
    region = torch.zeros(4, 16, 16, dtype=torch.bool)
    region[:, 4:12, 4:12] = True
    first = module._augment(images, region)
    assert torch.equal(first, module._augment(images, region))  # same (rank, step): same draws
    assert not torch.allclose(first, images)
    assert first.min() >= 0 and first.max() <= 1
    # gamma maps 0 to 0 and contrast leaves pixels outside the region alone: the background stays black
    black = images.clone()
    black[~region[:, None].expand_as(black)] = 0
    assert torch.all(module._augment(black, region)[~region[:, None].expand_as(black)] == 0)
    plain = SegmenterModule(to_dict(SegmenterConfig(**TINY)))
    assert plain._augment(images, region) is images  # off by default: nothing drawn, nothing copied


def test_config_round_trips_through_the_module():
    cfg = SegmenterConfig(arch="fpn", loss="gce", **TINY)
    assert SegmenterModule(to_dict(cfg)).cfg == cfg


# ------------------------------------------------------------------------------------------------ training
class _Squares(Dataset):
    """Bright squares on noise: target = square with an ignored ring at its border and ignored specks."""

    def __init__(self, n: int, seed: int, size: int = 32) -> None:
        g = torch.Generator().manual_seed(seed)
        self.items = []
        for _ in range(n):
            mask = torch.zeros(size, size, dtype=torch.uint8)
            side = int(torch.randint(8, 16, (1,), generator=g))
            y, x = (int(v) for v in torch.randint(0, size - side, (2,), generator=g))
            mask[y : y + side, x : x + side] = 1
            image = 0.3 * torch.randn(1, size, size, generator=g) + mask.float()
            target = mask.clone()
            ring = F.max_pool2d(mask[None].float(), 3, 1, 1)[0] - (
                -F.max_pool2d(-mask[None].float(), 3, 1, 1)[0]
            )
            target[ring > 0] = IGNORE  # the CAM is unsure at the border
            target[torch.rand(size, size, generator=g) < 0.05] = IGNORE
            self.items.append({"image": image, "target": target, "mask": mask, "domain": 0})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


class _StepLosses(L.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


def test_fit_on_synthetic_squares_learns(tmp_path):
    L.seed_everything(0, verbose=False)
    cfg = SegmenterConfig(lr=1e-2, epochs=2, batch_size=4, **TINY)
    module = SegmenterModule.from_config(cfg)
    losses = _StepLosses()
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[losses],
    )
    train = DataLoader(_Squares(48, seed=0), batch_size=cfg.batch_size, shuffle=True)
    val = DataLoader(_Squares(8, seed=1), batch_size=8)
    trainer.fit(module, train, val)
    assert sum(losses.losses[-3:]) < sum(losses.losses[:3])
    metrics = trainer.callback_metrics
    assert metrics["val/dice"] > 0.5
    assert metrics["val/gt_dice"] > 0.5
    # The cosine schedule set the last epoch's rate as a pure function of the epoch.
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(cfg.lr * 0.5)
    probs = trainer.predict(module, val)[0]
    # A checkpoint reloads from its plain-dict hyper-parameters alone (no encoder weights file needed).
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    reloaded = SegmenterModule.load_from_checkpoint(tmp_path / "last.ckpt").eval()
    assert reloaded.cfg == cfg
    with torch.no_grad():
        again = reloaded.predict_step(next(iter(val)), 0)
    assert torch.allclose(again, probs, atol=1e-5)
    assert probs.shape == (8, 32, 32) and probs.min() >= 0 and probs.max() <= 1


def test_size_penalty_known_values_and_gradient():
    # Two 1x4 images, the region is the first 2 pixels; logits of +-inf-like values give exact fractions.
    big = 30.0
    logits = torch.tensor([[[[big, -big, big, big]]], [[[big, big, -big, -big]]]], requires_grad=True)
    region = torch.tensor([[[True, True, False, False]], [[True, True, False, False]]])
    # image 0 predicts 1/2 of its region, bounds [0.75, 1] -> 0.25 short; image 1 predicts 2/2, bounds
    # [0, 0.25] -> 0.75 over. Outside-region pixels never count.
    bounds = torch.tensor([[0.75, 1.0], [0.0, 0.25]])
    value = size_penalty(logits, region, bounds)
    assert value.item() == pytest.approx((0.25 + 0.75) / 2, abs=1e-6)
    inside = torch.tensor([[0.3, 0.7, 0.0, 0.0], [0.6, 0.4, 0.0, 0.0]]).logit().reshape(2, 1, 1, 4)
    assert size_penalty(inside, region, bounds).item() == pytest.approx((0.25 + 0.25) / 2, abs=1e-6)
    within = torch.tensor([[0.5, 0.5], [0.0, 1.0]])
    assert size_penalty(inside, region, within).item() == 0.0
    # NaN bounds (a class without a prior) add nothing, and give no gradient.
    unknown = torch.tensor([[float("nan"), float("nan")], [0.0, 0.25]])
    soft = torch.zeros(2, 1, 1, 4, requires_grad=True)  # p = 0.5 everywhere
    size_penalty(soft, region, unknown).backward()
    assert soft.grad[0].abs().sum() == 0 and soft.grad[1, 0, 0, :2].gt(0).all()
    assert soft.grad[1, 0, 0, 2:].abs().sum() == 0  # outside the region: no gradient
    with pytest.raises(ValueError, match="bounds must be"):
        size_penalty(soft, region, bounds[:1])


def test_size_prior_config_validation():
    with pytest.raises(ConfigError, match=r"segmenter.size_prior.A' must be \[low, high\]"):
        SegmenterConfig(size_prior={"A": (0.5, 0.25)})
    with pytest.raises(ConfigError, match=r"segmenter\.size_weight"):
        SegmenterConfig(size_weight=-1.0)
    from medseg_weak.config import load_config

    with pytest.raises(ConfigError, match=r"'segmenter\.size_prior' must be a mapping"):
        load_config(None, ["segmenter.size_prior=[0, 1]"])


def test_size_prior_alone_moves_the_predicted_fraction_into_its_bounds():
    # Every target pixel is ignored, so only the size prior trains: images labelled "D" ask for 60-80 %
    # of their region, "A" for 0-10 %; the region is the left half (the right half never counts).
    L.seed_everything(0, verbose=False)
    g = torch.Generator().manual_seed(0)
    region = torch.zeros(32, 32, dtype=torch.bool)
    region[:, :16] = True
    items = []
    for i in range(16):
        dense = i % 2 == 0
        image = 0.2 * torch.randn(1, 32, 32, generator=g) + (0.8 if dense else 0.0)
        bounds = torch.tensor([0.6, 0.8] if dense else [0.0, 0.1])
        target = torch.full((32, 32), IGNORE, dtype=torch.uint8)
        items.append({"image": image, "target": target, "region": region, "size_bounds": bounds})
    cfg = SegmenterConfig(lr=1e-2, epochs=8, batch_size=8, size_prior={"D": (0.6, 0.8)}, **TINY)
    module = SegmenterModule.from_config(cfg)
    trainer = L.Trainer(
        max_epochs=cfg.epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, DataLoader(items, batch_size=cfg.batch_size, shuffle=True))
    module.eval()
    with torch.no_grad():
        probs = torch.sigmoid(module(torch.stack([it["image"] for it in items])))[:, 0]
    fractions = probs[:, region].mean(dim=1)
    assert (fractions[0::2] > 0.55).all() and (fractions[0::2] < 0.85).all()  # dense: into [0.6, 0.8]
    assert (fractions[1::2] < 0.15).all()  # fatty: under 0.1
    # Without a prior the same data gives no gradient at all: the prior is what moved the fractions.
    plain = SegmenterModule.from_config(dataclasses.replace(cfg, size_prior={}))
    batch = {k: torch.stack([it[k] for it in items[:8]]) for k in items[0]}
    loss = plain.training_step(batch, 0)
    loss.backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in plain.parameters())
