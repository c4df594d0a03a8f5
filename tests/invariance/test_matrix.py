"""The invariance matrix: tiny end-to-end runs on the built-in benchmark (2 hospitals, 32 px, tiny_cnn,
one epoch), the training augmentation seen by the classifier, resume, and config errors before any work."""

from __future__ import annotations

import csv
import json
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from medseg_weak.classify.module import ClassifierModule
from medseg_weak.classify.stage import ClassifierStage
from medseg_weak.config import Config, load_config
from medseg_weak.errors import ConfigError
from medseg_weak.invariance import make_transformation_set
from medseg_weak.invariance import matrix as matrix_module
from medseg_weak.invariance.augment import TransformationAugment
from medseg_weak.invariance.matrix import run_invariance_matrix
from medseg_weak.rundir import RunDir

TRAIN, EVAL = ["identity", "rotation"], ["rotation", "brightness"]


def tiny_config(*overrides: str) -> Config:
    tiny = [
        "synth.n_per_hospital=12",  # 3 patients x 4 views per hospital
        "synth.hospitals=2",
        "synth.height=64",
        "data.image_size=32",
        "data.test_domain=H2",
        "data.val_fraction=0.34",
        "classifier.backbone=tiny_cnn",
        "classifier.epochs=1",
        "classifier.batch_size=4",
        f"invariance.matrix_train=[{', '.join(TRAIN)}]",
        f"invariance.matrix_eval=[{', '.join(EVAL)}]",
        "invariance.steps=3",
        "invariance.images=4",
        *overrides,
    ]
    return load_config(None, tiny)


@pytest.fixture(scope="module")
def matrix_run(tmp_path_factory):
    """The matrix trained and measured once, recording what the augmentation hook received and what
    each training step then read: {row: [(images before the hook, images the step saw), ...]}."""
    seen: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    before: list[torch.Tensor] = []
    hook, step = TransformationAugment.on_train_batch_start, ClassifierModule.training_step

    def recording_hook(self, trainer, pl_module, batch, batch_idx):
        before.append(torch.cat([part["image"].clone() for part in batch.values() if part is not None]))
        hook(self, trainer, pl_module, batch, batch_idx)

    def recording_step(self, batch, batch_idx):
        aug = next(c for c in self.trainer.callbacks if isinstance(c, TransformationAugment))
        images = torch.cat([part["image"].clone() for part in batch.values() if part is not None])
        seen.setdefault(aug.name, []).append((before.pop(0), images))
        return step(self, batch, batch_idx)

    run = RunDir(tmp_path_factory.mktemp("matrix") / "run")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(TransformationAugment, "on_train_batch_start", recording_hook)
        mp.setattr(ClassifierModule, "training_step", recording_step)
        result = run_invariance_matrix(tiny_config(), run, progress=False)
    return run, result, seen


def test_matrix_files_and_values(matrix_run):
    run, result, _ = matrix_run
    assert result.train == tuple(TRAIN) and result.eval == tuple(EVAL)
    assert result.values.shape == (2, 2)
    assert np.isfinite(result.values).all() and (result.values >= 0).all()
    for kind in ("csv", "md", "png", "json"):
        assert result.paths[kind] == run.root / "matrix" / f"matrix.{kind}"
        assert result.paths[kind].is_file()
    rows = list(csv.reader(result.paths["csv"].open()))
    assert rows[0] == ["train", *EVAL, "mean", "held_out_accuracy"]
    assert [r[0] for r in rows[1:]] == [*TRAIN, "mean"]
    assert all(len(r) == len(rows[0]) for r in rows)
    np.testing.assert_allclose(np.array([r[1:3] for r in rows[1:3]], dtype=float), result.values, rtol=1e-6)
    for name in TRAIN:  # the held-out hospital's accuracy, from each row's own metrics.json
        metrics = json.loads((run.root / "matrix" / name / "classifier" / "metrics.json").read_text())
        assert result.accuracy[name] == pytest.approx(metrics["test"]["H2/accuracy"])
    summary = json.loads(result.paths["json"].read_text())
    assert summary["values"] == result.values.tolist() and summary["layers"] == list(result.layers)
    assert "| identity |" in result.paths["md"].read_text()


def test_rows_are_separate_stages_with_their_augmentation_in_the_fingerprint(matrix_run):
    run, _, _ = matrix_run
    configs = [run.read_state(f"matrix/{name}/classifier")["config"] for name in TRAIN]
    assert [c["train_augmentation"] for c in configs] == TRAIN


def test_the_classifier_trains_on_augmented_images(matrix_run):
    _, _, seen = matrix_run
    assert seen["identity"] and seen["rotation"]
    assert all(torch.equal(b, a) for b, a in seen["identity"])  # identity: untouched
    # rotation: each image drawn from rotation(-30, 0, 30), so some (not necessarily all) are rotated
    assert any(not torch.equal(b, a) for b, a in seen["rotation"])
    assert all(b.shape == a.shape for b, a in seen["rotation"])


def test_a_second_call_trains_and_measures_nothing(matrix_run, monkeypatch):
    run, first, _ = matrix_run
    ckpts = sorted((run.root / "matrix").glob("*/classifier/*.ckpt"))
    stamps = [p.stat().st_mtime_ns for p in ckpts]

    def fail(*args, **kwargs):
        raise AssertionError("recomputed")

    monkeypatch.setattr(ClassifierStage, "run", fail)
    monkeypatch.setattr(matrix_module, "measure_invariance", fail)
    again = run_invariance_matrix(tiny_config(), run, progress=False)
    np.testing.assert_array_equal(again.values, first.values)
    assert again.accuracy == first.accuracy
    assert [p.stat().st_mtime_ns for p in ckpts] == stamps


def test_a_new_evaluation_set_measures_only_its_column(matrix_run, monkeypatch):
    run, first, _ = matrix_run
    real, calls = matrix_module.measure_invariance, []

    def counting(model, images, tset, *args, **kwargs):
        calls.append(tset.name)
        return real(model, images, tset, *args, **kwargs)

    monkeypatch.setattr(matrix_module, "measure_invariance", counting)
    more = run_invariance_matrix(tiny_config("invariance.matrix_eval=[rotation, brightness, contrast]"), run)
    assert calls == ["contrast", "contrast"]  # one per row; the stored cells are reused
    np.testing.assert_array_equal(more.values[:, :2], first.values)


def test_augmentation_is_seeded_by_step_and_moves_the_region():
    tset = make_transformation_set("rotation", steps=3)
    images = torch.rand(6, 1, 16, 16)
    region = torch.zeros(6, 16, 16, dtype=torch.bool)
    region[:, :, :4] = True  # a left strip: any non-zero rotation moves it

    def augmented(step: int) -> dict:
        batch = {"H1": {"image": images.clone(), "region": region.clone()}, "H2": None}
        trainer = SimpleNamespace(global_step=step, global_rank=0)
        TransformationAugment(tset, seed=0).on_train_batch_start(trainer, None, batch, 0)
        return batch["H1"]

    a, b, c = augmented(0), augmented(0), augmented(1)
    assert torch.equal(a["image"], b["image"]) and not torch.equal(a["image"], c["image"])
    changed = [not torch.equal(x, y) for x, y in zip(a["image"], images)]
    assert any(changed)
    assert [not torch.equal(x, y) for x, y in zip(a["region"], region)] == changed
    identity = {"H1": {"image": images.clone()}}
    augment = TransformationAugment(make_transformation_set("identity", steps=3), seed=0)
    augment.on_train_batch_start(SimpleNamespace(global_step=0, global_rank=0), None, identity, 0)
    assert torch.equal(identity["H1"]["image"], images)


@pytest.mark.parametrize(
    ("override", "key", "valid"),
    [
        ("invariance.matrix_train=[identity, rotaton]", "invariance.matrix_train", "rotation"),
        ("invariance.matrix_eval=[rotation, brightnes]", "invariance.matrix_eval", "brightness"),
        ("invariance.measure=varianse", "invariance.measure", "normalized_variance"),
    ],
)
def test_an_unknown_name_fails_before_anything_is_written(tmp_path, override, key, valid):
    run = RunDir(tmp_path / "run")
    with pytest.raises(ConfigError, match=re.escape(key)) as err:
        run_invariance_matrix(tiny_config(override), run, progress=False)
    assert "valid:" in str(err.value) and valid in str(err.value)
    assert not run.root.exists()


def test_a_same_equivariance_measure_needs_spatial_sets(tmp_path):
    run = RunDir(tmp_path / "run")
    cfg = tiny_config("invariance.measure=normalized_variance_same_equivariance")
    with pytest.raises(ConfigError, match=r"invariance\.matrix_eval.*brightness"):
        run_invariance_matrix(cfg, run, progress=False)
    assert not run.root.exists()


def test_an_unknown_layer_fails_before_anything_is_written(tmp_path):
    run = RunDir(tmp_path / "run")
    with pytest.raises(ConfigError, match=re.escape("backbone.nope")):
        run_invariance_matrix(tiny_config("invariance.layers=[backbone.nope]"), run, progress=False)
    assert not run.root.exists()


def test_too_few_test_images_fail_before_training(tmp_path):
    run = RunDir(tmp_path / "run")
    cfg = tiny_config("data.test_domain=''", "data.test_fraction=0.0")
    with pytest.raises(ConfigError, match="at least 2 test images"):
        run_invariance_matrix(cfg, run, progress=False)
    assert not (run.root / "matrix").exists()
