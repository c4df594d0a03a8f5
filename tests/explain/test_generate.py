"""The CAM stage end to end: files in original geometry, evaluation, selection (resume after a kill and
several ranks: test_predict_loop.py)."""

import csv
import json
import shutil

import numpy as np
import pytest
from PIL import Image as PILImage

from medseg_weak.cli import main
from medseg_weak.data.io import read_image
from medseg_weak.data.manifest import load_manifest


def cams(run_dir, overrides, *extra):
    return main(["cams", "-q", "--run", str(run_dir), *overrides, *extra])


def fresh_copy(trained_run, tmp_path, name):
    overrides, run_dir = trained_run
    copy = tmp_path / name
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("cams"))
    return overrides, copy


def test_outputs_in_original_geometry_with_index(trained_run, synth_mammo, tmp_path):
    overrides, run_dir = fresh_copy(trained_run, tmp_path, "a")
    assert cams(run_dir, overrides, "--evaluate") == 0
    out = run_dir / "cams"
    rows = list(csv.DictReader((out / "index.csv").read_text().splitlines()))
    manifest = load_manifest(synth_mammo)
    assert [r["id"] for r in rows] == [r.id for r in manifest.records]
    for row, record in list(zip(rows, manifest.records))[:6]:
        shape = read_image(manifest.image_path(record)).pixels.shape
        cam = np.load(out / row["cam_path"])
        mask = np.asarray(PILImage.open(out / row["mask_path"]))
        assert cam.dtype == np.float16 and cam.shape == shape and cam.min() >= 0 and cam.max() <= 1
        assert mask.dtype == np.uint8 and mask.shape == shape and set(np.unique(mask)) <= {0, 1, 255}
        assert (out / row["overlay_path"]).is_file()
        assert row["method"] == "gradcam" and row["target"] == "D" and row["threshold_rule"] == "otsu"
        assert 0.0 <= float(row["dice"]) <= 1.0
    assert (out / "quality_by_hospital.md").read_text().splitlines()[-1].startswith("| all |")
    assert "| D |" in (out / "quality_by_class.md").read_text()
    assert json.loads((out / "stage.json").read_text())["complete"] is True


@pytest.mark.slow
def test_select_records_choice(trained_run, tmp_path):
    overrides, run_dir = fresh_copy(trained_run, tmp_path, "sel")
    assert cams(run_dir, overrides, "--select") == 0
    choice = json.loads((run_dir / "cams" / "selection.json").read_text())
    assert choice["criterion"] == "pseudo-mask dice" and 0 <= choice["score"] <= 1
    row = next(csv.DictReader((run_dir / "cams" / "index.csv").read_text().splitlines()))
    assert row["method"] == choice["method"] and row["layer"] == choice["layer"]
    assert "| 1 |" in (run_dir / "cams" / "selection.md").read_text()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--set", "cams.layer=layer9"], "'cams.layer' is 'layer9'; valid: final"),
        (["--set", "cams.target=Z"], "'cams.target' is 'Z'"),
        (["--set", "cams.method=gradkam"], "unknown CAM method 'gradkam'"),
    ],
)
def test_bad_cam_config_is_a_clear_error(trained_run, tmp_path, capsys, extra, message):
    overrides, run_dir = fresh_copy(trained_run, tmp_path, "bad")
    assert cams(run_dir, overrides, *extra) == 3
    assert message in capsys.readouterr().err


def test_unmappable_geometry_is_a_clear_error(tmp_path):
    from medseg_weak.config import CamConfig
    from medseg_weak.data.manifest import Record
    from medseg_weak.errors import InputError
    from medseg_weak.explain.generate import _write_image_outputs

    arrays = {"pixels": np.zeros((8, 8), np.float32), "region": np.ones((8, 8), bool)}
    geometry = {"laterality": "L", "flipped": False, "crop_box": [0, 0, 4], "original_shape": [8, 8]}
    record = Record("x", "images/x.dcm", "A", "H1", "p")
    with pytest.raises(InputError, match=r"images/x\.dcm: cannot map the CAM back"):
        _write_image_outputs(tmp_path, CamConfig(), record, arrays, geometry, np.zeros((8, 8)), ["A"], False)
