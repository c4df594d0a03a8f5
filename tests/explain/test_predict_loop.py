"""CAM generation through Lightning's predict loop: two gloo CPU ranks write the bytes one process
writes, the placement keys stay out of the fingerprint, and a rerun after a kill skips finished images."""

from __future__ import annotations

import filecmp
import json
import shutil
from pathlib import Path

import pytest

from medseg_weak.cli import main
from medseg_weak.explain import generate

SUBFOLDERS = ("cam", "mask", "overlay", "meta")
TWO_RANKS = ["--set", "cams.accelerator=cpu", "--set", "cams.devices=2", "--set", "cams.strategy=ddp_spawn"]


def _cams(run_dir: Path, overrides: list[str], *extra: str) -> int:
    return main(["cams", "-q", "--run", str(run_dir), *overrides, *extra])


def _copy(trained_run, folder: Path) -> tuple[list[str], Path]:
    overrides, run_dir = trained_run
    shutil.copytree(run_dir, folder, ignore=shutil.ignore_patterns("cams"))
    return overrides, folder


def _assert_same_outputs(a: Path, b: Path) -> None:
    for sub in SUBFOLDERS:
        names = sorted(p.name for p in (a / sub).iterdir())
        assert names == sorted(p.name for p in (b / sub).iterdir()), sub
        _, mismatch, errors = filecmp.cmpfiles(a / sub, b / sub, names, shallow=False)
        assert not mismatch and not errors, (sub, mismatch[:3], errors[:3])
    assert filecmp.cmp(a / "index.csv", b / "index.csv", shallow=False)


@pytest.fixture(scope="module")
def one_process(trained_run, tmp_path_factory) -> Path:
    """The cams/ folder of an uninterrupted single-process run."""
    overrides, run_dir = _copy(trained_run, tmp_path_factory.mktemp("one") / "run")
    assert _cams(run_dir, overrides) == 0
    return run_dir / "cams"


@pytest.mark.slow
def test_two_ranks_write_the_bytes_of_one_process(trained_run, one_process, tmp_path):
    overrides, run_dir = _copy(trained_run, tmp_path / "ddp")
    assert _cams(run_dir, overrides, *TWO_RANKS) == 0
    out = run_dir / "cams"
    _assert_same_outputs(one_process, out)
    assert len((out / "index.csv").read_text().splitlines()) == 1 + len(list((out / "meta").iterdir()))
    state, reference = (json.loads((d / "stage.json").read_text()) for d in (out, one_process))
    assert state["complete"] is True
    assert state["config"] == reference["config"]  # where the loop ran is not part of the fingerprint
    assert "devices" not in state["config"]["cams"]


@pytest.mark.slow
def test_rerun_after_a_kill_skips_finished_images(trained_run, one_process, tmp_path, monkeypatch):
    overrides, run_dir = _copy(trained_run, tmp_path / "killed")
    out = run_dir / "cams"
    assert _cams(run_dir, overrides, "--shard", "0/2") == 0  # "killed" with every other image done
    assert not json.loads((out / "stage.json").read_text())["complete"]
    done = {p.name: p.stat() for p in (out / "meta").iterdir()}
    total = len(list((one_process / "meta").iterdir()))
    assert 0 < len(done) < total

    explained = []
    real = generate.compute_cams

    def counting(model, images, **kwargs):
        explained.append(images.shape[0])
        return real(model, images, **kwargs)

    monkeypatch.setattr(generate, "compute_cams", counting)
    assert _cams(run_dir, overrides) == 0
    assert sum(explained) == total - len(done)  # only the missing images went through the loop
    for name, before in done.items():  # finished images' files were not rewritten
        after = (out / "meta" / name).stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns), name
    _assert_same_outputs(one_process, out)
    assert json.loads((out / "stage.json").read_text())["complete"] is True


def test_placement_keys_are_not_in_the_fingerprint():
    from medseg_weak.config import load_config
    from medseg_weak.explain.stage import CamsStage

    base = CamsStage().fingerprint(load_config(None, []))
    placed = CamsStage().fingerprint(load_config(None, [a for a in TWO_RANKS if a != "--set"]))
    assert placed == base
    changed = CamsStage().fingerprint(load_config(None, ["cams.aug_smooth=true"]))
    assert changed != base  # the check can fail: other cams keys are in it


def test_two_rank_placement_builds_a_two_process_loop():
    """What the DDP test runs under: a DDP strategy over two CPU processes, not one process."""
    from lightning.pytorch.strategies import DDPStrategy

    from medseg_weak.config import CamConfig
    from medseg_weak.core.predict_loop import predict_trainer, runs_in_one_process

    trainer = predict_trainer(CamConfig(accelerator="cpu", devices="2", strategy="ddp_spawn"))
    assert isinstance(trainer.strategy, DDPStrategy) and trainer.num_devices == 2
    assert not runs_in_one_process(trainer)
    assert runs_in_one_process(predict_trainer(CamConfig(accelerator="cpu")))
