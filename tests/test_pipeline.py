import json

from medseg_weak.cli import main
from tests.conftest import tiny_args


def test_pipeline_runs_every_stage_then_skips(synth_mammo, tmp_path):
    run_dir = tmp_path / "run"
    args = ["pipeline", "-q", "--run-dir", str(run_dir), *tiny_args(synth_mammo)]
    assert main(args) == 0
    timings = json.loads((run_dir / "timings.json").read_text())
    assert list(timings) == ["data", "classifier", "cams", "segmenter", "oracle", "eval", "report"]
    for stage in ("classifier", "cams", "segmenter", "oracle"):
        assert json.loads((run_dir / stage / "stage.json").read_text())["complete"]
    assert (run_dir / "cams" / "quality_by_hospital.md").is_file()
    dice = (run_dir / "eval" / "dice_by_hospital.md").read_text()
    assert all(f"| {m} |" in dice for m in ("cam", "unet_cam", "unet_truth"))
    assert dice.splitlines()[0].endswith("| all |")
    assert main(["evaluate", "-q", "--run", str(run_dir)]) == 0  # the evaluation alone, again
    assert "| unet_truth |" in (run_dir / "eval" / "dice_by_class.md").read_text()
    stamp = (run_dir / "cams" / "index.csv").stat().st_mtime_ns
    assert main(args) == 0  # every stage complete and matching: nothing is redone
    assert (run_dir / "cams" / "index.csv").stat().st_mtime_ns == stamp


def test_self_training_round_adds_a_row(synth_mammo, tmp_path):
    import numpy as np
    from PIL import Image as PILImage

    run_dir = tmp_path / "run"
    args = [
        "pipeline",
        "-q",
        "--run-dir",
        str(run_dir),
        *tiny_args(synth_mammo, "segmenter.self_training_rounds=1"),
    ]
    assert main(args) == 0
    targets = sorted((run_dir / "segmenter_self1" / "targets").glob("*.png"))
    assert targets and set(np.unique(np.asarray(PILImage.open(targets[0])))) <= {0, 1, 255}
    assert "| unet_self |" in (run_dir / "eval" / "dice_by_hospital.md").read_text()


def test_mistyped_encoder_fails_before_any_stage(tmp_path):
    run_dir = tmp_path / "run"
    assert main(["pipeline", "-q", "--run-dir", str(run_dir), "--set", "segmenter.encoder=nope"]) == 3
    assert not run_dir.exists()


def test_unknown_weak_label_class_fails_before_the_classifier_trains(synth_mammo, tmp_path):
    run_dir = tmp_path / "run"
    args = tiny_args(synth_mammo, "segmenter.pseudo_mask_classes=[E]")
    assert main(["pipeline", "-q", "--run-dir", str(run_dir), *args]) == 3
    assert not (run_dir / "classifier").exists()
