"""classifier.bn_stats=pooled: evaluation normalises with statistics of the pooled training images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import medseg_weak as mw


def test_pooled_statistics_are_recomputed_from_every_training_hospital(synth_mammo, tmp_path):
    from medseg_weak.classify.module import ClassifierModule
    from medseg_weak.classify.train import make_datamodule
    from medseg_weak.data.prepare import prepare

    overrides = [f"data.manifest={synth_mammo}", f"runs_dir={tmp_path}", "data.image_size=32",
                 "classifier.epochs=1", "classifier.bn_stats=pooled"]  # fmt: skip
    result = mw.train_classifier(None, overrides, progress=False)
    module = ClassifierModule.load_from_checkpoint(
        result.best_checkpoint, map_location="cpu", weights_only=False
    )
    run = mw.api.RunDir(result.folder.parent)
    cfg = mw.run_config(run.root)
    data = make_datamodule(cfg, prepare(cfg, run), run)
    conv, norm = module.model.backbone.body[0][0], module.model.backbone.body[0][1]
    with torch.no_grad():  # the checkpoint's statistics: the plain average of the training batches' means
        means = [
            conv(b["image"]).mean(dim=(0, 2, 3)) for b in data.loader(data.split("train"), shuffle=False)
        ]
    assert torch.allclose(norm.running_mean, torch.stack(means).mean(0), atol=1e-5)
    assert len({r.domain for r in data.split("train").records}) > 1  # every training hospital, pooled


# ------------------------------------------------------------------ classifier.test_bn: hospital (AdaBN)
def _conv_bn_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 2),
    ).eval()


def _fit_statistics(net: torch.nn.Module, images: torch.Tensor) -> None:
    from medseg_weak.classify.norm_stats import recompute_bn_statistics

    recompute_bn_statistics(net, [images])


def test_hospital_statistics_undo_a_scanner_shift():
    """A new scanner's affine intensity change (gain > 0, offset) is exactly what a conv + BatchNorm
    layer normalises away when the layer sees that scanner's own statistics; with the training
    statistics the logits move."""
    from medseg_weak.classify.norm_stats import HospitalStatistics

    net = _conv_bn_net()
    home = torch.randn(8, 1, 10, 10, generator=torch.Generator().manual_seed(1))
    scanner = 2.5 * home + 0.7
    _fit_statistics(net, home)  # "training" statistics: the home hospital's
    with torch.no_grad():
        want = net(home)
        shifted = net(scanner)
        stats = HospitalStatistics.from_batches(net, [(scanner, ["H9"] * 8)], batch_size=8)
        adapted = stats.apply(scanner, ["H9"] * 8, net)
    assert (shifted - want).abs().max() > 0.1  # the shift matters without adaptation
    torch.testing.assert_close(adapted, want, atol=1e-4, rtol=1e-4)


def test_mixed_batches_give_each_hospital_its_own_pass():
    """Batches that mix hospitals give every hospital the statistics of a pass over its own images in
    batches of the given size; the model's own statistics are untouched; outputs keep batch order."""
    from medseg_weak.classify.norm_stats import HospitalStatistics, batch_norms

    net = _conv_bn_net()
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(6, 1, 10, 10, generator=g), 3 * torch.randn(5, 1, 10, 10, generator=g) + 1
    order = ["A", "B", "B", "A", "A", "B", "A", "B", "A", "B", "A"]  # 6 A, 5 B, interleaved
    images = torch.empty(11, 1, 10, 10)
    images[[i for i, d in enumerate(order) if d == "A"]] = a
    images[[i for i, d in enumerate(order) if d == "B"]] = b
    before = {k: v.clone() for k, v in net.state_dict().items()}
    batches = [(images[i : i + 4], order[i : i + 4]) for i in range(0, 11, 4)]
    stats = HospitalStatistics.from_batches(net, batches, batch_size=4)
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key]), f"{key} changed"
    with torch.no_grad():
        got = stats.apply(images, order, net)
        for hospital, own in (("A", a), ("B", b)):
            reference = _conv_bn_net()
            from medseg_weak.classify.norm_stats import recompute_bn_statistics

            recompute_bn_statistics(reference, [own[i : i + 4] for i in range(0, len(own), 4)])
            norm, ref_norm = batch_norms(net)[0], batch_norms(reference)[0]
            rows = [i for i, d in enumerate(order) if d == hospital]
            torch.testing.assert_close(got[rows], reference(own))
            assert not torch.allclose(norm.running_mean, ref_norm.running_mean)  # net kept its own
    with pytest.raises(KeyError, match="H7"):
        stats.apply(images[:1], ["H7"], net)


def test_test_bn_hospital_reaches_test_predictions_and_cams(synth_mammo, tmp_path, monkeypatch):
    """End to end: the classifier stage's held-out predictions and the CAM stage use each hospital's
    own statistics (computed here by hand from one pass over that hospital's images)."""
    import csv

    from medseg_weak.classify.module import ClassifierModule
    from medseg_weak.classify.norm_stats import recompute_bn_statistics
    from medseg_weak.classify.train import make_datamodule
    from medseg_weak.data.prepare import prepare
    from medseg_weak.explain import generate
    from medseg_weak.explain.cams import compute_cams

    seen: dict[str, object] = {}  # the raw CAM each image's files are written from
    write = generate._write_image_outputs
    monkeypatch.setattr(
        generate,
        "_write_image_outputs",
        lambda out, c, record, *rest: (
            seen.setdefault(record.id, rest[2]) is None or write(out, c, record, *rest)
        ),
    )
    overrides = [f"data.manifest={synth_mammo}", f"runs_dir={tmp_path}", "data.image_size=32",
                 "classifier.epochs=1", "classifier.batch_size=4", "data.test_domain=H3",
                 "cams.batch_size=8", "classifier.test_bn=hospital"]  # fmt: skip
    trained = mw.train_classifier(None, overrides, progress=False)
    run = mw.api.RunDir(trained.folder.parent)
    mw.make_cams(run.root, progress=False)
    cfg = mw.run_config(run.root)
    data = make_datamodule(cfg, prepare(cfg, run), run)
    module = ClassifierModule.load_from_checkpoint(
        trained.best_checkpoint, map_location="cpu", weights_only=False
    ).eval()
    training = {k: v.clone() for k, v in module.model.state_dict().items()}
    held_out = data.split("test")
    assert {r.domain for r in held_out.records} == {"H3"}
    with open(trained.folder / "predictions.csv") as f:
        rows = {row["id"]: row for row in csv.DictReader(f)}
    with torch.no_grad():
        images = torch.stack([held_out[i]["image"] for i in range(len(held_out))])
        before = module.model(images).softmax(1)[:, 0]
        recompute_bn_statistics(module.model, images.split(cfg.classifier.batch_size))  # H3's own
        after = module.model(images).softmax(1)[:, 0]
    stored = torch.tensor([float(rows[r.id]["p_A"]) for r in held_out.records])
    torch.testing.assert_close(stored, after, atol=2e-5, rtol=0)
    assert (stored - before).abs().max() > 1e-3  # the training statistics would have said otherwise

    # The CAM stage: each hospital's statistics from all of its images in the manifest, every split
    # (for the held-out H3, the test images above; for H1, its training, validation and test images).
    from medseg_weak.data.dataset import PreprocessedDataset

    target = generate.target_index(cfg.cams, module.labels)
    for hospital in ("H3", "H1"):
        module.model.load_state_dict(training)
        records = [r for r in data.manifest.records if r.domain == hospital]
        own = PreprocessedDataset(
            data.manifest.subset(records), cfg.data.kind, cfg.data.image_size, data.cache
        )
        pixels = torch.stack([own[i]["image"] for i in range(len(own))])
        recompute_bn_statistics(module.model, pixels.split(cfg.classifier.batch_size))
        cams = compute_cams(module.model, pixels[:8], target_layer=cfg.cams.layer, method=cfg.cams.method,
                            targets=target, batch_size=8, fixed_batches=True)  # fmt: skip
        for record, cam in zip(records[:8], cams):
            np.testing.assert_allclose(seen[record.id], cam.float().numpy(), atol=1e-4, err_msg=record.id)
