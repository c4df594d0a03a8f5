"""`medseg-weak data import` through the real CLI, and import -> data check -> pipeline end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medseg_weak.cli import main
from medseg_weak.data.io import read_image, read_mask
from medseg_weak.data.manifest import load_manifest
from tests.conftest import tiny_args
from tests.data.importers import fakes


def test_import_then_data_check(tmp_path, capsys):
    source, _ = fakes.build("rsna", tmp_path / "layout")
    out = tmp_path / "out"
    assert main(["data", "import", "rsna", "--source", str(source), "--out", str(out), "-q"]) == 0
    assert "kept 3 of 4 rows (1 dropped)" in capsys.readouterr().out
    assert main(["data", "check", str(out / "manifest.csv"), "-q"]) == 0
    assert "no problems found" in capsys.readouterr().out


def test_user_error_is_one_line_and_exit_code_2(tmp_path, capsys):
    source, _ = fakes.build("rsna", tmp_path / "layout")
    (source / "train.csv").write_text("site_id,patient_id\n1,2\n")
    assert main(["data", "import", "rsna", "--source", str(source), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "train.csv: missing column(s) 'image_id', 'laterality'" in err and "Traceback" not in err


def test_unknown_format_lists_the_registered_ones(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "import", "nope", "--source", str(tmp_path), "--out", str(tmp_path / "o")])
    assert exit_info.value.code == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err


def _dense_mask_layout_from_benchmark(synth_manifest, root):
    """The VinDr dense-mask subset's layout, filled with the built-in benchmark: JPG images and JPG masks,
    VinDr's annotation CSV for the labels and metadata.csv naming one scanner per hospital."""
    manifest = load_manifest(synth_manifest)
    annotations, metadata = [], []
    for r in manifest:
        pixels = np.round(read_image(manifest.image_path(r)).pixels * 255)
        fakes.write_jpeg(root / "images" / f"{r.id}.jpg", pixels, quality=90)
        fakes.write_jpeg(root / "dense_masks" / f"{r.id}.jpg", read_mask(manifest.mask_path(r)), quality=75)
        density = f"DENSITY {r.label}"
        annotations.append(
            [r.patient_id, "s", r.id, r.laterality, r.view, 0, 0, "BI-RADS 1", density, "training"]
        )
        metadata.append([r.id, f"Scanner {r.domain}"])
    fakes.write_csv(root / "breast-level_annotations.csv", fakes.VINDR_HEADER, annotations)
    fakes.write_csv(root / "metadata.csv", ["SOP Instance UID", "Manufacturer's Model Name"], metadata)
    return manifest


@pytest.mark.slow
def test_import_check_pipeline_end_to_end(synth_mammo, tmp_path):
    truth = _dense_mask_layout_from_benchmark(synth_mammo, tmp_path / "layout")
    out = tmp_path / "imported"
    argv = [
        "data",
        "import",
        "vindr_dense_masks",
        "--source",
        str(tmp_path / "layout"),
        "--out",
        str(out),
        "-q",
    ]
    assert main(argv) == 0
    manifest = load_manifest(out / "manifest.csv")
    assert len(manifest) == len(truth)
    assert sorted(manifest.domains) == [f"Scanner {d}" for d in truth.domains]
    by_id = {r.id: r for r in truth}
    for record in manifest:  # labels, patients and thresholded masks all survive the round trip
        original = by_id[record.id]
        assert (record.label, record.patient_id, record.laterality) == (
            original.label,
            original.patient_id,
            original.laterality,
        )
        mask = read_mask(manifest.mask_path(record))
        assert set(np.unique(mask)) <= {0, 255}
        assert np.mean((mask > 0) == (read_mask(truth.mask_path(original)) > 0)) > 0.98
    assert main(["data", "check", str(out / "manifest.csv"), "-q"]) == 0

    run_dir = tmp_path / "run"
    assert main(["pipeline", "-q", "--run-dir", str(run_dir), *tiny_args(out / "manifest.csv")]) == 0
    assert "eval" in json.loads((run_dir / "timings.json").read_text())
    dice = (run_dir / "eval" / "dice_by_hospital.md").read_text()
    assert "| unet_cam |" in dice and "| unet_truth |" in dice


def test_cli_offers_exactly_the_registered_formats():
    from medseg_weak.cli import build_parser
    from medseg_weak.data.importers import IMPORTERS

    parser = build_parser()
    for fmt in IMPORTERS.names():
        args = parser.parse_args(["data", "import", fmt, "--source", "s", "--out", "o"])
        assert args.format == fmt and args.func.__name__ == "cmd_data_import"
