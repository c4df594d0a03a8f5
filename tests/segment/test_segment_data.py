import shutil

import numpy as np
import pytest

from medseg_weak.cli import main
from medseg_weak.data.cache import ArrayCache
from medseg_weak.data.dataset import PreprocessedDataset
from medseg_weak.data.manifest import load_manifest
from medseg_weak.errors import InputError
from medseg_weak.segment.data import SegmentationDataset


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
