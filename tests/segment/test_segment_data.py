import math
import shutil

import numpy as np
import pytest
import torch

from medseg_weak.cli import main
from medseg_weak.data.cache import ArrayCache
from medseg_weak.data.dataset import PreprocessedDataset
from medseg_weak.data.manifest import load_manifest
from medseg_weak.errors import InputError
from medseg_weak.segment.data import SegmentationDataset
from tests.conftest import interrupt_after_first_epoch


@pytest.fixture(scope="module")
def cams_run(trained_run, tmp_path_factory):
    overrides, run_dir = trained_run
    copy = tmp_path_factory.mktemp("segdata") / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("cams"))
    assert main(["cams", "-q", "--run", str(copy), *overrides]) == 0
    return copy


def test_pseudo_mask_targets_align_with_images(cams_run, synth_mammo):
    manifest = load_manifest(synth_mammo)
    base = PreprocessedDataset(manifest, "mammo", 48, ArrayCache(cams_run / "cache"))
    data = SegmentationDataset(base, "cams", cams_run / "cams")
    item = data[0]
    assert item["target"].shape == item["image"].shape[1:] == (48, 48)
    assert set(np.unique(item["target"].numpy())) <= {0, 1, 255}
    assert not item["target"][~item["region"]].any()  # nothing outside the breast is foreground
    truth = SegmentationDataset(base, "truth")
    assert set(np.unique(truth[0]["target"].numpy())) <= {0, 1}


def test_missing_pseudo_masks_are_listed(cams_run, synth_mammo, tmp_path):
    manifest = load_manifest(synth_mammo)
    cams_dir = tmp_path / "cams"
    shutil.copytree(cams_run / "cams", cams_dir)
    for record in manifest.records[:2]:
        (cams_dir / "mask" / f"{record.id}.png").unlink()
    base = PreprocessedDataset(manifest, "mammo", 48)
    with pytest.raises(InputError, match=f"no pseudo-mask for 2 image\\(s\\): {manifest.records[0].id}"):
        SegmentationDataset(base, "cams", cams_dir)


def test_train_segmenter_verb(trained_run, tmp_path):
    _, run_dir = trained_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("cams"))
    tiny = ["--set", "segmenter.encoder_depth=3", "--set", "segmenter.decoder_channels=[16,8,8]"]
    verb = ["train-segmenter", "-q", "--run", str(copy), "--set", "segmenter.epochs=1", *tiny]
    assert main(verb) == 2  # no CAMs yet: an InputError naming cams/index.csv, nothing trained
    assert not (copy / "segmenter").exists()
    assert main(["cams", "-q", "--run", str(copy)]) == 0
    assert main(verb) == 0
    assert (copy / "segmenter" / "best.ckpt").is_file()
    assert main([*verb, "--source", "truth"]) == 0
    assert (copy / "oracle" / "best.ckpt").is_file()
    # A different segmenter config is refused, the trained one is kept; --force retrains.
    stamp = (copy / "segmenter" / "best.ckpt").stat().st_mtime_ns
    assert main([*verb[:-4], "--set", "segmenter.epochs=2", *tiny]) == 3
    assert (copy / "segmenter" / "best.ckpt").stat().st_mtime_ns == stamp


def test_pseudo_mask_classes_and_size_prior_shape_training_targets_only(cams_run, synth_mammo):
    from medseg_weak.config import load_config
    from medseg_weak.data.prepare import split_manifest
    from medseg_weak.errors import ConfigError
    from medseg_weak.rundir import RunDir
    from medseg_weak.segment.train import split_dataset

    overrides = [f"data.manifest={synth_mammo}", "data.image_size=48"]
    weak = ["segmenter.pseudo_mask_classes=[C,D]", "segmenter.size_prior={A: [0, 0.25], D: [0.75, 1]}"]
    cfg = load_config(None, [*overrides, *weak])
    manifest = split_manifest(cfg, load_manifest(synth_mammo))
    run = RunDir(cams_run)
    train = split_dataset(cfg, manifest, run, "train", "cams")
    plain = split_dataset(load_config(None, overrides), manifest, run, "train", "cams")
    assert len(train) == len(plain) == sum(r.split == "train" for r in manifest.records)
    seen = set()
    for i, record in enumerate(train.base.records):
        item, raw = train[i], plain[i]
        region = item["region"]
        if record.label in ("C", "D"):  # trusted: the pseudo-mask as it is
            assert torch.equal(item["target"], raw["target"])
        else:  # untrusted: nothing inside the breast is claimed either way
            assert (item["target"][region] == 255).all() and not item["target"][~region].any()
        bounds = item["size_bounds"].tolist()
        want = {"A": [0.0, 0.25], "D": [0.75, 1.0]}.get(record.label)
        assert bounds == want if want else all(math.isnan(b) for b in bounds)
        seen.add(record.label)
    assert {"A", "D"} <= seen and len(seen) > 2
    # Test images (the `cam` row of the evaluation) and the oracle's truth are never changed.
    test, test_plain = (
        split_dataset(c, manifest, run, "test", "cams") for c in (cfg, load_config(None, overrides))
    )
    assert all(torch.equal(test[i]["target"], test_plain[i]["target"]) for i in range(len(test)))
    truth = split_dataset(cfg, manifest, run, "train", "truth")
    assert all(math.isnan(truth[i]["size_bounds"][0]) for i in range(3))
    for key, value in (("pseudo_mask_classes", "[E]"), ("size_prior", "{E: [0, 1]}")):
        bad = load_config(None, [*overrides, f"segmenter.{key}={value}"])
        with pytest.raises(ConfigError, match=rf"segmenter.{key}' has E.*valid: A, B, C, D"):
            split_dataset(bad, manifest, run, "train", "cams")


def test_ground_truth_mask_of_another_size_names_the_file(synth_mammo, tmp_path):
    from PIL import Image as PILImage

    data_dir = tmp_path / "data"
    shutil.copytree(synth_mammo.parent, data_dir)
    manifest = load_manifest(data_dir / synth_mammo.name)
    record = manifest.records[0]
    mask_path = manifest.mask_path(record)
    PILImage.fromarray(np.zeros((10, 12), dtype=np.uint8)).save(mask_path)
    base = PreprocessedDataset(manifest, "mammo", 48)
    with pytest.raises(InputError, match=r"mask is \(10, 12\), its image is"):
        base.load(0)


def test_interrupted_segmenter_resumes_to_identical_weights(trained_run, tmp_path, monkeypatch):
    import medseg_weak as mw
    from medseg_weak.rundir import RunDir
    from medseg_weak.segment import stage as train_mod

    _, run_dir = trained_run
    tiny = ["segmenter.epochs=2", "segmenter.encoder_depth=3", "segmenter.decoder_channels=[16,8,8]"]

    def run_oracle(name: str) -> RunDir:
        copy = tmp_path / name
        if not copy.exists():
            shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("cams"))
        mw.train_segmenter(copy, tiny, source="truth", progress=False)
        return RunDir(copy)

    finished = torch.load(run_oracle("a").stage("oracle") / "last.ckpt", weights_only=False)
    assert finished["epoch"] == 1  # last.ckpt is the last epoch's, improved or not
    want = finished["state_dict"]

    with interrupt_after_first_epoch(monkeypatch, train_mod):
        run_oracle("b")
    assert not (tmp_path / "b" / "oracle" / "metrics.json").exists()  # not complete, so not skipped
    assert (tmp_path / "b" / "oracle" / "last.ckpt").is_file()  # epoch 0's state: the rerun resumes it
    assert torch.load(tmp_path / "b" / "oracle" / "last.ckpt", weights_only=False)["epoch"] == 0
    got = torch.load(run_oracle("b").stage("oracle") / "last.ckpt", weights_only=False)["state_dict"]
    assert got.keys() == want.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], msg=key)
