"""Lightning smoke tests of the classifier stage on the built-in benchmark (tiny images, few steps)."""

import json

import pytest
import torch

import medseg_weak as mw
from medseg_weak.classify.module import ClassifierModule, TrainingDiverged
from medseg_weak.classify.surgery import RULES
from medseg_weak.config import load_config
from medseg_weak.data.datamodule import HospitalDataModule
from medseg_weak.data.prepare import prepare
from medseg_weak.errors import ConfigError, InputError
from medseg_weak.rundir import RunDir
from tests.conftest import interrupt_after_first_epoch


def make_cfg(synth_mammo, tmp_path, *overrides):
    return load_config(
        None,
        [
            f"data.manifest={synth_mammo}",
            f"runs_dir={tmp_path}",
            "data.image_size=48",
            "data.val_fraction=0.25",
            "data.test_fraction=0.25",
            "classifier.epochs=1",
            "classifier.batch_size=4",
            "classifier.surgery.diagnostics_every=1",
            *overrides,
        ],
    )


def run_stage(cfg, **kwargs):
    result = mw.train_classifier(cfg, progress=False, **kwargs)
    return result.metrics, RunDir(result.folder.parent)


def test_datamodule_gives_one_batch_per_training_hospital(synth_mammo, tmp_path):
    cfg = make_cfg(synth_mammo, tmp_path, "data.test_domain=H3")
    manifest = prepare(cfg, RunDir.for_config(cfg))
    data = HospitalDataModule(manifest, "mammo", 48, batch_size=4)
    assert data.train_domains == ["H1", "H2"]
    batch = next(iter(data.train_dataloader()))
    batch = batch[0] if isinstance(batch, tuple) else batch
    assert sorted(batch) == ["H1", "H2"]
    for domain, item in batch.items():
        assert item["image"].shape == (4, 1, 48, 48)
        assert set(item["domain"].tolist()) == {data.domains.index(domain)}
    assert {int(d) for b in data.test_dataloader() for d in b["domain"]} == {data.domains.index("H3")}


@pytest.mark.parametrize("rule", RULES.names())
def test_every_rule_trains_and_writes_outputs(synth_mammo, tmp_path, rule):
    cfg = make_cfg(synth_mammo, tmp_path, f"classifier.surgery.rule={rule}", "data.test_domain=H3")
    metrics, run = run_stage(cfg)
    out = run.stage("classifier")
    assert (out / "best.ckpt").is_file() and (out / "last.ckpt").is_file()
    assert metrics["rule"] == rule and 0.0 <= metrics["test"]["accuracy"] <= 1.0
    assert "H3/kappa" in metrics["test"] and "H1/accuracy" not in metrics["test"]  # only the held-out one
    assert json.loads((out / "metrics.json").read_text()) == metrics
    lines = (out / "predictions.csv").read_text().splitlines()
    assert lines[0].startswith("id,domain,label,predicted,p_A") and all(",H3," in row for row in lines[1:])
    logged = (out / "logs" / "metrics.csv").read_text()
    assert "train/loss" in logged
    if rule != "erm":
        assert "surgery/cos/" in logged  # conflict diagnostics were logged


def test_augmentation_and_coral(synth_mammo, tmp_path):
    cfg = make_cfg(
        synth_mammo,
        tmp_path,
        "classifier.augment.gamma=0.3",
        "classifier.augment.histogram_matching=0.5",
        "classifier.surgery.coral_weight=0.1",
    )
    metrics, _ = run_stage(cfg)
    assert metrics["labels"] == ["A", "B", "C", "D"]
    assert len(metrics["test"]["confusion"]) == 4


def test_restrict_classes_keeps_subset_in_order(synth_mammo):
    from medseg_weak.data.datamodule import restrict_classes
    from medseg_weak.data.manifest import load_manifest

    manifest = load_manifest(synth_mammo)
    binary = restrict_classes(manifest, ("D", "A"))
    assert binary.labels == ("D", "A")
    assert {r.label for r in binary.records} == {"A", "D"}
    assert len(binary) == sum(r.label in "AD" for r in manifest.records)


def test_finished_stage_is_skipped_other_config_refused_force_retrains(synth_mammo, tmp_path):
    cfg = make_cfg(synth_mammo, tmp_path)
    first, run = run_stage(cfg)
    ckpt = run.stage("classifier") / "best.ckpt"
    stamp = ckpt.stat().st_mtime_ns
    again, _ = run_stage(cfg)
    assert again == first and ckpt.stat().st_mtime_ns == stamp
    other = make_cfg(synth_mammo, tmp_path, "classifier.lr=0.01")
    with pytest.raises(ConfigError, match=r"made by a different config \(differs in classifier\.lr\)"):
        run_stage(other)
    run_stage(other, force=True)
    assert ckpt.stat().st_mtime_ns != stamp


def test_interrupted_training_resumes_to_identical_weights(synth_mammo, tmp_path, monkeypatch):
    from medseg_weak.classify import stage as train_mod

    base = ["classifier.epochs=2", "classifier.surgery.rule=agr_rand", "classifier.augment.gamma=0.2"]
    _, run = run_stage(make_cfg(synth_mammo, tmp_path / "a", *base))
    want = torch.load(run.stage("classifier") / "last.ckpt", weights_only=False)["state_dict"]
    cfg = make_cfg(synth_mammo, tmp_path / "b", *base)
    with interrupt_after_first_epoch(monkeypatch, train_mod):
        run_stage(cfg)
    _, run_b = run_stage(cfg)  # same command again: resumes from last.ckpt
    got = torch.load(run_b.stage("classifier") / "last.ckpt", weights_only=False)["state_dict"]
    for key in want:
        torch.testing.assert_close(got[key], want[key], msg=key)


def test_hospital_with_one_class_is_a_clear_error(synth_mammo, tmp_path):
    cfg = make_cfg(synth_mammo, tmp_path, "classifier.classes=[A, D]")
    with pytest.raises(InputError, match="has training images of one class only"):
        run_stage(cfg)


def test_nan_loss_names_step_and_hospital():
    module = ClassifierModule.from_config(load_config().classifier, ["A", "B"], ["H1", "H2"])
    with pytest.raises(TrainingDiverged, match=r"loss is nan at step 0 .*hospital\(s\) H2"):
        module._check_finite(torch.tensor([0.5, float("nan")]), ["H1", "H2"])


def test_bad_monitor_and_classes(synth_mammo, tmp_path):
    with pytest.raises(ConfigError, match=r"'classifier\.monitor' must be a validation metric"):
        run_stage(make_cfg(synth_mammo, tmp_path, "classifier.monitor=train/loss"))
    with pytest.raises(ConfigError, match=r"'classifier\.classes' has E"):
        run_stage(make_cfg(synth_mammo, tmp_path / "x", "classifier.classes=[A, E]"))
