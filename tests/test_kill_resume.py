"""Resume proven by a real kill: the CLI runs as a subprocess, is SIGKILLed mid-run, and the same
command run again must (1) end with outputs equal to an uninterrupted run (weights bitwise, CAM files
byte for byte) and (2) not redo finished work, read from the stage's own records (stage.json's
``resumed_from_epoch``, the untouched meta files of CAMs written before the kill)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

EXE = Path(sys.executable).parent / "medseg-weak"
pytestmark = pytest.mark.slow


def kill_when(args: list[str], ready: Callable[[], bool], timeout: float = 600) -> None:
    """Start ``medseg-weak args``, SIGKILL it as soon as ``ready()``; fail if it finished first."""
    proc = subprocess.Popen([str(EXE), *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and not ready():
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the kill point was never reached")
        time.sleep(0.02)
    if proc.poll() is not None:
        pytest.fail(f"the run ended (exit {proc.returncode}) before the kill point: {proc.stderr.read()}")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def cli(args: list[str]) -> None:
    """Every run of these tests is a fresh process, as a user's rerun is: a run inside pytest would
    inherit what earlier tests set (thread counts), and floating-point sums would differ in the last bit."""
    result = subprocess.run([str(EXE), *args], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def options(manifest: Path, *extra: str) -> list[str]:
    settings = [
        f"data.manifest={manifest}",
        "data.image_size=32",
        "classifier.batch_size=4",
        "cams.batch_size=4",
        *extra,
    ]
    return ["-q", *(a for s in settings for a in ("--set", s))]


def test_classifier_with_dropout_and_group_dro_killed_after_an_epoch(synth_mammo, tmp_path):
    extra = ("classifier.epochs=4", "classifier.dropout=0.3", "classifier.surgery.rule=group_dro")
    args = ["train-classifier", *options(synth_mammo, *extra)]
    cli([*args, "--run-dir", str(tmp_path / "whole")])
    killed = tmp_path / "killed"
    kill_when([*args, "--run-dir", str(killed)], lambda: (killed / "classifier" / "last.ckpt").is_file())
    state = json.loads((killed / "classifier" / "stage.json").read_text())
    assert not state["complete"]
    cli([*args, "--run-dir", str(killed)])
    state = json.loads((killed / "classifier" / "stage.json").read_text())
    assert state["complete"] and state["resumed_from_epoch"] >= 1  # epoch 0 was not trained again
    for name in ("last.ckpt", state["best_checkpoint"]):
        assert_same_weights(tmp_path / "whole" / "classifier" / name, killed / "classifier" / name)


def test_a_truncated_last_checkpoint_is_never_resumed(synth_mammo, tmp_path):
    args = ["train-classifier", *options(synth_mammo, "classifier.epochs=2")]
    cli([*args, "--run-dir", str(tmp_path / "whole")])
    killed = tmp_path / "killed"
    kill_when([*args, "--run-dir", str(killed)], lambda: (killed / "classifier" / "last.ckpt").is_file())
    last = killed / "classifier" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # what a kill mid-write would leave
    cli([*args, "--run-dir", str(killed)])
    state = json.loads((killed / "classifier" / "stage.json").read_text())
    assert state["resumed_from_epoch"] is None  # started over instead of loading half a file
    assert (killed / "classifier" / "last.ckpt.unreadable").is_file()
    assert_same_weights(tmp_path / "whole" / "classifier" / "last.ckpt", last)


def test_cams_killed_mid_generation_finish_byte_for_byte(trained_run, tmp_path):
    overrides, run_dir = trained_run
    runs = {}
    for name in ("whole", "killed"):
        runs[name] = tmp_path / name
        shutil.copytree(run_dir, runs[name], ignore=shutil.ignore_patterns("cams"))
    args = ["cams", "-q", "--evaluate", *overrides, "--set", "cams.batch_size=2"]
    cli([*args, "--run", str(runs["whole"])])
    meta = runs["killed"] / "cams" / "meta"
    kill_when([*args, "--run", str(runs["killed"])], lambda: meta.is_dir() and len(os.listdir(meta)) >= 6)
    before = {p.name: p.stat().st_mtime_ns for p in meta.iterdir() if p.suffix == ".json"}
    total = len(os.listdir(runs["whole"] / "cams" / "meta"))
    assert 0 < len(before) < total
    cli([*args, "--run", str(runs["killed"])])
    after = {p.name: p.stat().st_mtime_ns for p in meta.iterdir()}
    assert all(after[name] == stamp for name, stamp in before.items())  # finished images not redone
    for sub in ("cam", "mask", "overlay", "meta"):
        for path in sorted((runs["whole"] / "cams" / sub).iterdir()):
            assert path.read_bytes() == (runs["killed"] / "cams" / sub / path.name).read_bytes(), path.name
    assert (runs["whole"] / "cams" / "index.csv").read_bytes() == (
        runs["killed"] / "cams" / "index.csv"
    ).read_bytes()


def test_augmented_self_training_round_killed_resumes_to_identical_weights(synth_mammo, tmp_path):
    extra = (
        "classifier.epochs=1",
        "segmenter.encoder_depth=3",
        "segmenter.decoder_channels=[16,8,8]",
        "segmenter.epochs=3",
        "segmenter.self_training_rounds=1",
        "segmenter.augment.gamma=0.3",  # augmentation draws, seeded by step: a resume must redraw them
        "segmenter.augment.contrast=0.3",
    )
    args = ["pipeline", *options(synth_mammo, *extra)]
    cli([*args, "--run-dir", str(tmp_path / "whole")])
    killed = tmp_path / "killed"
    # Killed twice: in the CAM-trained segmenter, then in the self-training round.
    for stage in ("segmenter", "segmenter_self1"):
        kill_when([*args, "--run-dir", str(killed)], (killed / stage / "last.ckpt").is_file)
    cli([*args, "--run-dir", str(killed)])
    for stage in ("segmenter", "segmenter_self1"):
        state = json.loads((killed / stage / "stage.json").read_text())
        assert state["complete"] and state["resumed_from_epoch"] >= 1, stage
    for stage in ("classifier", "segmenter", "segmenter_self1", "oracle"):
        assert_same_weights(tmp_path / "whole" / stage / "last.ckpt", killed / stage / "last.ckpt")
    whole = (tmp_path / "whole" / "eval" / "per_image.csv").read_bytes()
    assert whole == (killed / "eval" / "per_image.csv").read_bytes()
