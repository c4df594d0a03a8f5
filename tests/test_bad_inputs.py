"""Bad input across every verb: a non-zero exit, no traceback, and a last stderr line that starts with
``error:`` and names the file or the dotted config key. One table, walked verb by verb."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medseg_weak.cli import main
from medseg_weak.logs import reset_logging

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


@pytest.fixture(autouse=True)
def _reset_logging():
    yield
    reset_logging()  # cli.main installs handlers on the root logger


def _files(root: Path, manifest: Path) -> dict[str, str]:
    """Broken inputs of each kind, written into ``root``."""
    corrupt = root / "corrupt.ckpt"
    corrupt.write_bytes(b"PK\x03\x04 truncated by a kill")
    wrong = root / "segmenter.ckpt"
    torch.save({"state_dict": {"model.encoder.weight": torch.zeros(1)}}, wrong)
    not_a_run = root / "not_a_run"
    not_a_run.mkdir()
    broken = root / "broken_run"
    (broken / "classifier").mkdir(parents=True)
    (broken / "classifier" / "stage.json").write_text("{ hand-edited")
    bad_yaml = root / "bad.yaml"
    bad_yaml.write_text("classifier: [unclosed\n")
    return {
        "manifest": str(manifest),
        "corrupt": str(corrupt),
        "wrong": str(wrong),
        "not_a_run": str(not_a_run),
        "broken": str(broken),
        "bad_yaml": str(bad_yaml),
        "out": str(root / "out"),
    }


CASES = [
    # (verb and arguments with {placeholders}, what the error line must name)
    ("synth mammo --out {out} --n-per-hospital 0", "'synth.n_per_hospital'"),
    ("synth mammo --out {out} --spurious-cue 2", "'synth.spurious_cue'"),
    ("synth mammo --out {out} --set synth.cue_sign.H9=1 --cue-mode shared", "'synth.cue_sign.H9'"),
    ("synth fundus --out {out} --config {bad_yaml}", "bad.yaml"),
    ("data check {out}/missing.csv", "missing.csv"),
    ("data preview {manifest} --out {out}/x.bmpx", "x.bmpx"),
    ("data preview {manifest} --out {out}/p.png --set data.image_size=abc", "'data.image_size'"),
    ("data import nosuchformat --source {out} --out {out}", "nosuchformat"),
    ("train-classifier --set data.manifest={manifest} --set classifier.lr=-1", "'classifier.lr'"),
    ("train-classifier --set data.manifest={manifest} --set classifier.lr", "--set 'classifier.lr'"),
    ("train-classifier --set data.manifest={manifest} --set classifier.surgery.rule=agr", "agr"),
    ("train-classifier --config {out}/missing.yaml", "missing.yaml"),
    ("cams --run {not_a_run}", "not_a_run"),
    ("cams --checkpoint {corrupt} --set data.manifest={manifest} --run {out}", "corrupt.ckpt"),
    ("cams --checkpoint {wrong} --set data.manifest={manifest} --run {out}", "segmenter.ckpt"),
    ("cams --checkpoint {out}/none.ckpt --set data.manifest={manifest}", "none.ckpt"),
    ("train-segmenter --run {not_a_run}", "not_a_run"),
    ("evaluate --run {not_a_run}", "not_a_run"),
    ("pipeline --config {DEMO} --run-dir {out} --set segmenter.encoder=resnet1", "'segmenter.encoder'"),
    ("pipeline --config {DEMO} --run-dir {out} --set cams.target=Z", "'cams.target'"),
    ("pipeline --set data.manifest={manifest} --run-dir {broken}", "stage.json"),
    ("dg-benchmark --set data.manifest={manifest} --rules erm,bogus --run-dir {out}", "bogus"),
    ("dg-benchmark --set data.manifest={manifest} --seeds 0 --run-dir {out}", "--seeds"),
    ("search --set data.manifest={manifest} --backbones nope_net --run-dir {out}", "nope_net"),
    ("search --set data.manifest={manifest} --lr abc --run-dir {out}", "--lr"),
]


@pytest.mark.parametrize(("command", "named"), CASES, ids=[c for c, _ in CASES])
def test_bad_input_is_one_clear_error_line(tiny_manifest, tmp_path, capsys, command, named):
    files = {**_files(tmp_path, tiny_manifest), "DEMO": str(DEMO)}
    args = [a.format(**files) for a in command.split()]
    try:
        code = main([*args, "-q"])
    except SystemExit as exit_:  # argparse's own errors (an unknown choice) exit 2
        code = exit_.code
    err = capsys.readouterr().err
    assert code not in (0, None), err
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error:") or (last.startswith("medseg-weak") and ": error:" in last), last
    assert named.format(**files) in last, last
    if "broken_run" in command:
        assert (tmp_path / "broken_run" / "classifier" / "stage.json").read_text() == "{ hand-edited"
    if command.startswith(("dg-benchmark", "search")):  # refused before the run directory is made
        assert not Path(files["out"]).exists()
