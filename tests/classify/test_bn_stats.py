"""classifier.bn_stats=pooled: evaluation normalises with statistics of the pooled training images."""

from __future__ import annotations

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
