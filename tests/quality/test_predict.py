"""predict: batched grading into predictions.csv for quality and density checkpoints, unreadable images
listed rather than fatal, and checkpoints of the wrong kind refused with the file and the kinds named."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from medseg_weak.classify.module import ClassifierModule
from medseg_weak.config import ClassifierConfig, SegmenterConfig, to_dict
from medseg_weak.data.dataset import preprocess_record
from medseg_weak.data.manifest import load_manifest
from medseg_weak.errors import ConfigError, InputError
from medseg_weak.quality.predict import load_grader, predict
from medseg_weak.segment.module import SegmenterModule
from tests.quality.conftest import SIZE


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _save(module, path):
    """What Lightning's checkpoint holds for reloading: the hyper-parameters and the weights."""
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    return path


def test_quality_folder_with_unreadable_images(quality_run, synth_fundus, tmp_path):
    out, _ = quality_run
    manifest = load_manifest(synth_fundus)
    folder = tmp_path / "photos"
    folder.mkdir()
    for record in manifest.records[:5]:
        shutil.copy(manifest.image_path(record), folder / f"{record.id}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    # Faint noise and no disc: readable, but preprocess_fundus finds no field of view in it.
    dark = np.random.default_rng(0).integers(0, 3, (64, 64, 3)).astype(np.uint8)
    PILImage.fromarray(dark).save(folder / "black.png")
    result = predict(
        out / "best.ckpt", folder, out=tmp_path / "predictions.csv", batch_size=3, progress=False
    )

    assert result.ids == sorted(r.id for r in manifest.records[:5])
    assert sorted(f[0] for f in result.failed) == ["black", "broken"]
    failures = {row["id"]: row for row in _rows(tmp_path / "unreadable.csv")}
    assert "no field of view found" in failures["black"]["reason"]
    assert failures["broken"]["path"] == str(folder / "broken.png") and failures["broken"]["reason"]
    rows = _rows(tmp_path / "predictions.csv")
    assert list(rows[0]) == ["id", "predicted", "p_Good", "p_Usable", "p_Reject"]
    assert [r["id"] for r in rows] == result.ids
    probs = np.array([[float(r[f"p_{c}"]) for c in ("Good", "Usable", "Reject")] for r in rows])
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    assert [r["predicted"] for r in rows] == result.predicted

    # Known value: the probabilities are the model's softmax on the preprocessed photograph.
    grader = load_grader(out / "best.ckpt")
    record = next(r for r in manifest.records if r.id == result.ids[0])
    arrays, _ = preprocess_record(manifest, record, grader.preprocess, SIZE)
    x = torch.from_numpy(np.asarray(arrays["pixels"])).permute(2, 0, 1)[None]
    with torch.no_grad():
        expected = grader.model(x).softmax(dim=1)[0].numpy()
    assert np.allclose(result.probs[0], expected, atol=1e-5)


def test_quality_manifest_keeps_label_and_domain(quality_run, synth_fundus, tmp_path):
    out, _ = quality_run
    manifest = load_manifest(synth_fundus)
    manifest = manifest.subset(manifest.records[:4])
    predict(out / "last.ckpt", manifest, out=tmp_path / "p.csv", batch_size=8, progress=False)
    rows = _rows(tmp_path / "p.csv")
    assert [(r["id"], r["domain"], r["label"]) for r in rows] == [
        (r.id, r.domain, r.label) for r in manifest.records
    ]
    assert not (tmp_path / "unreadable.csv").exists()


def _breast_png(path, rng):
    """A grey mammogram-like phantom: a bright half-disc against the left edge, some texture."""
    yy, xx = np.mgrid[:96, :72]
    breast = ((yy - 48) ** 2 / 40**2 + xx**2 / 55**2) < 1
    pixels = breast * (0.5 + 0.3 * rng.random((96, 72)))
    PILImage.fromarray((pixels * 255).astype(np.uint8)).save(path)


def test_density_classifier_checkpoint(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(3):
        _breast_png(tmp_path / f"m{i}.png", rng)
    module = ClassifierModule.from_config(ClassifierConfig(), list("ABCD"), ["H1"])
    ckpt = _save(module, tmp_path / "classifier.ckpt")
    with pytest.raises(ConfigError, match="pass image_size"):
        predict(ckpt, tmp_path, progress=False)
    result = predict(
        ckpt,
        [tmp_path / f"m{i}.png" for i in range(3)],
        out=tmp_path / "p.csv",
        image_size=32,
        progress=False,
    )
    assert result.ids == ["m0", "m1", "m2"] and not result.failed
    assert list(_rows(tmp_path / "p.csv")[0]) == ["id", "predicted", "p_A", "p_B", "p_C", "p_D"]
    # A module in memory goes through the same adapter as its checkpoint file.
    again = predict(module, [tmp_path / f"m{i}.png" for i in range(3)], image_size=32, progress=False)
    assert np.allclose(again.probs, result.probs, atol=1e-6)


def test_wrong_kind_of_checkpoint(tmp_path):
    segmenter = SegmenterModule(to_dict(SegmenterConfig(encoder_depth=3, decoder_channels=(8, 8, 8))))
    path = _save(segmenter, tmp_path / "segmenter.ckpt")
    with pytest.raises(
        InputError,
        match=r"segmenter\.ckpt: is a checkpoint of none of the model kinds; "
        r"expected one of: classifier, quality",
    ):
        load_grader(path)
    classifier = _save(
        ClassifierModule.from_config(ClassifierConfig(), list("ABCD"), ["H1"]), tmp_path / "c.ckpt"
    )
    with pytest.raises(InputError, match=r"c\.ckpt: is a classifier checkpoint; expected one of: quality"):
        load_grader(classifier, kinds=["quality"])
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match=r"junk\.ckpt: cannot read checkpoint"):
        load_grader(tmp_path / "junk.ckpt")
    with pytest.raises(InputError, match="checkpoint not found"):
        load_grader(tmp_path / "missing.ckpt")
