"""QualityNet's contract, the mask-weight switch, and fit_quality end to end (metrics, resume)."""

from __future__ import annotations

import json

import torch

from medseg_weak.data.manifest import load_manifest
from medseg_weak.quality import train as quality_train
from medseg_weak.quality.model import QualityNet
from medseg_weak.quality.module import QualityModule
from tests.conftest import interrupt_after_first_epoch
from tests.quality.conftest import SIZE, split_parts, tiny_config


def test_model_contract():
    net = QualityNet(tiny_config(), num_classes=3, mask_channels=4).eval()
    x = torch.rand(2, 3, 32, 32)
    logits, masks = net.forward_all(x)
    assert logits.shape == (2, 3) and masks.shape == (2, 4, 32, 32)
    # forward = forward_head(forward_features): the classifier's contract, which CAM code relies on.
    assert torch.allclose(net(x), net.forward_head(net.forward_features(x)))
    assert torch.allclose(net(x), logits)
    features = net.forward_features(x)
    seen = []
    net.cam_layers()["final"].register_forward_hook(lambda m, i, o: seen.append(o))
    net(x)
    assert len(seen) == 1 and torch.equal(seen[0], features)


def _batch(n: int = 4, size: int = 32) -> dict:
    g = torch.Generator().manual_seed(0)
    return {
        "image": torch.rand(n, 3, size, size, generator=g),
        "label": torch.tensor([0, 1, 2, 0][:n]),
        "domain": torch.zeros(n, dtype=torch.long),
        "index": torch.arange(n),
        "degradation": (torch.rand(n, 4, size, size, generator=g) > 0.7).float(),
        "has_mask": torch.tensor([True, True, False, True][:n]),
    }


def test_mask_weight_balances_and_zero_turns_the_decoder_off():
    labels, domains = ["Good", "Usable", "Reject"], ["C1"]
    batch = _batch()
    torch.manual_seed(0)
    on = QualityModule.from_config(tiny_config(dropout=0.0), labels, domains, 32)
    total, _, masks, grade = on._losses(batch)
    assert masks is not None and total > grade  # the mask loss is added
    torch.manual_seed(0)
    heavy = QualityModule.from_config(tiny_config(dropout=0.0, mask_weight=3.0), labels, domains, 32)
    total3, _, _, grade3 = heavy._losses(batch)
    assert torch.allclose(grade, grade3)
    assert torch.allclose(total3 - grade3, 3 * (total - grade), rtol=1e-4)
    off = QualityModule.from_config(tiny_config(mask_weight=0.0), labels, domains, 32)
    loss, _, masks, _ = off._losses(batch)
    assert masks is None
    loss.backward()
    decoder = [p.grad for p in off.model.unet.decoder.parameters()]
    assert all(g is None for g in decoder)  # the decoder is not trained at all
    assert any(p.grad is not None for p in off.model.unet.encoder.parameters())


def test_fit_quality_writes_metrics_and_predictions(quality_run, synth_fundus):
    out, metrics = quality_run
    # (compared as JSON text: NaN, the AUROC of a class absent from a camera, is not equal to itself)
    assert json.dumps(metrics) == json.dumps(json.loads((out / "metrics.json").read_text()))
    assert (out / "best.ckpt").is_file() and (out / "last.ckpt").is_file()
    assert (out / "logs" / "metrics.csv").is_file()
    saved = metrics
    assert saved["labels"] == ["Good", "Usable", "Reject"] and saved["domains"] == ["C1", "C2", "C3"]
    test = saved["test"]
    _, _, test_part = split_parts(load_manifest(synth_fundus))
    assert test["n"] == len(test_part)
    for key in ("accuracy", "auroc", "f1_macro", "specificity_micro", "C1/accuracy", "mask_dice_blur"):
        assert key in test, key
    assert 0.0 <= test["mask_dice"] <= 1.0
    assert sum(map(sum, test["confusion"])) == len(test_part)
    rows = (out / "predictions.csv").read_text().splitlines()
    assert rows[0] == "id,domain,label,predicted,p_Good,p_Usable,p_Reject"
    assert sorted(r.split(",")[0] for r in rows[1:]) == sorted(r.id for r in test_part.records)
    checkpoint = torch.load(out / "best.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["medseg_kind"] == "quality" and checkpoint["hyper_parameters"]["image_size"] == SIZE


def test_resume_ends_with_the_weights_of_an_unbroken_run(quality_run, synth_fundus, tmp_path, monkeypatch):
    """Killed after epoch 1 of 2 and restarted: the same final weights as the run never interrupted."""
    unbroken, _ = quality_run
    train, val, test = split_parts(load_manifest(synth_fundus))
    args = (tiny_config(epochs=2), train, val, tmp_path, SIZE)
    with interrupt_after_first_epoch(monkeypatch, quality_train):
        quality_train.fit_quality(*args, test=test, progress=False)
    assert (tmp_path / "last.ckpt").is_file() and not (tmp_path / "metrics.json").exists()
    quality_train.fit_quality(*args, test=test, progress=False)
    a = torch.load(unbroken / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    b = torch.load(tmp_path / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
