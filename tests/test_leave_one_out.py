import json

import pytest
import yaml

from medseg_weak.cli import main
from tests.conftest import tiny_args


@pytest.mark.slow
def test_leave_one_out_runs_a_fold_per_hospital_and_pools_them(synth_mammo, tmp_path):
    run_dir = tmp_path / "loo"
    args = ["pipeline", "-q", "--leave-one-out", "--run-dir", str(run_dir), *tiny_args(synth_mammo)]
    assert main(args) == 0
    held_out = json.loads((run_dir / "folds.json").read_text())["held_out"]
    assert held_out == ["H1", "H2", "H3"]
    for domain in held_out:
        fold = run_dir / "folds" / domain
        assert yaml.safe_load((fold / "config.yaml").read_text())["data"]["test_domain"] == domain
        splits = (fold / "classifier" / "splits.csv").read_text().splitlines()[1:]
        test_domains = {row.split(",")[1] for row in splits if row.endswith(",test")}
        assert test_domains == {domain}  # the held-out hospital is test only, never trained on
        assert not any(row.split(",")[1] == domain for row in splits if not row.endswith(",test"))
    pooled = (run_dir / "eval" / "dice_by_hospital.md").read_text()
    header = pooled.splitlines()[0]
    assert all(f"| {d} |" in header for d in held_out) and header.endswith("| all |")
    assert "leave-one-out" in pooled  # the title says what the columns mean
    per_image = (run_dir / "eval" / "per_image.csv").read_text().splitlines()
    assert len(per_image) - 1 == 48 * 3  # every image once (when held out) x cam, unet_cam, unet_truth
    timings = json.loads((run_dir / "timings.json").read_text())
    assert set(held_out) <= set(timings) and "eval" in timings

    # The pooled evaluation alone, again; then a rerun skips every fold's every stage.
    assert main(["evaluate", "-q", "--run", str(run_dir)]) == 0
    stamp = (run_dir / "folds" / "H1" / "cams" / "index.csv").stat().st_mtime_ns
    assert main(args) == 0
    assert (run_dir / "folds" / "H1" / "cams" / "index.csv").stat().st_mtime_ns == stamp

    # Never mix layouts: a single run into the leave-one-out directory is refused.
    assert main(["pipeline", "-q", "--run-dir", str(run_dir), *tiny_args(synth_mammo)]) == 3


def test_leave_one_out_refuses_a_test_domain(synth_mammo, tmp_path):
    run_dir = tmp_path / "loo"
    args = ["pipeline", "-q", "--leave-one-out", "--run-dir", str(run_dir), "--test-domain", "H1"]
    assert main([*args, *tiny_args(synth_mammo)]) == 3
    assert not run_dir.exists()


def test_pooled_evaluation_names_unfinished_folds(tmp_path, capsys):
    from medseg_weak.errors import InputError
    from medseg_weak.evaluate.heldout import evaluate_folds
    from medseg_weak.rundir import RunDir

    with pytest.raises(InputError, match="H2, H3"):
        evaluate_folds(RunDir(tmp_path), ["H2", "H3"], ["A", "D"], tmp_path / "eval")
