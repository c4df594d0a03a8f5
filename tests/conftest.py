"""Shared fixtures: tiny manifests written on the fly, so no test needs downloads or big data."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from medseg_weak.data.manifest import Record, write_manifest


def make_png(path: Path, rng: np.random.Generator, shape: tuple[int, int] = (48, 40)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray(rng.integers(0, 255, size=shape, dtype=np.uint8)).save(path)


@pytest.fixture
def tiny_manifest(tmp_path: Path) -> Path:
    """3 hospitals x 4 patients x 2 images, PNG files, labels A-D; returns the manifest path."""
    rng = np.random.default_rng(0)
    records = []
    for h in range(3):
        for p in range(4):
            for v, view in enumerate(("CC", "MLO")):
                rid = f"H{h}_P{p}_{view}"
                make_png(tmp_path / "img" / f"{rid}.png", rng)
                records.append(
                    Record(
                        id=rid,
                        path=f"img/{rid}.png",
                        label="ABCD"[(p + v) % 4],
                        domain=f"H{h}",
                        patient_id=f"H{h}_P{p}",
                        view=view,
                        laterality="L",
                    )
                )
    return write_manifest(records, tmp_path / "manifest.csv")


@pytest.fixture(scope="session")
def synth_mammo(tmp_path_factory) -> Path:
    """A small built-in benchmark (3 hospitals x 16 images at 160 px), generated once per session."""
    from medseg_weak.config import SynthConfig
    from medseg_weak.data.synthetic import generate

    out = tmp_path_factory.mktemp("synth_mammo")
    return generate(out, SynthConfig(kind="mammo", n_per_hospital=16, hospitals=3, height=160), seed=0)


@pytest.fixture(scope="session")
def trained_run(synth_mammo, tmp_path_factory):
    """A run directory with a tiny trained classifier on ``synth_mammo``: (config overrides, run dir)."""
    from medseg_weak.cli import main

    run_dir = tmp_path_factory.mktemp("trained") / "run"
    overrides = [
        "--set",
        f"data.manifest={synth_mammo}",
        "--set",
        "data.image_size=48",
        "--set",
        "classifier.epochs=2",
        "--set",
        "classifier.batch_size=4",
        "--set",
        "cams.batch_size=8",
    ]
    assert main(["train-classifier", "-q", "--run-dir", str(run_dir), *overrides]) == 0
    return overrides, run_dir


def tiny_args(manifest: Path, *overrides: str) -> list[str]:
    """CLI ``--set`` options for a tiny run on ``manifest``: 32 px, one epoch, a shallow UNet."""
    tiny = [
        f"data.manifest={manifest}",
        "data.image_size=32",
        "classifier.epochs=1",
        "segmenter.encoder_depth=3",
        "segmenter.decoder_channels=[16, 8, 8]",
        "segmenter.epochs=1",
        *overrides,
    ]
    return [arg for option in tiny for arg in ("--set", option)]


class Interrupted(Exception):
    """Raised by :func:`interrupt_after_first_epoch`: a run killed between epochs."""


@contextmanager
def interrupt_after_first_epoch(monkeypatch, module) -> Iterator[None]:
    """Within the block, trainers from ``module.make_trainer`` stop with :class:`Interrupted` as epoch 1
    starts (epoch 0 finished, its last.ckpt written); the block expects the interruption."""
    import lightning as L

    real = module.make_trainer

    class StopAfterFirstEpoch(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == 1:
                raise Interrupted

    def interrupted(*args, **kwargs):
        trainer = real(*args, **kwargs)
        trainer.callbacks.append(StopAfterFirstEpoch())
        return trainer

    monkeypatch.setattr(module, "make_trainer", interrupted)
    try:
        with pytest.raises(Interrupted):
            yield
    finally:
        monkeypatch.setattr(module, "make_trainer", real)


TINY_FUNDUS = {
    "name": "fq",
    "seed": 0,
    "synth": {"kind": "fundus", "n_per_hospital": 8, "hospitals": 3, "size": 64},
    "data": {"kind": "fundus", "image_size": 64, "val_fraction": 0.25, "test_fraction": 0.25},
    "quality": {"encoder": "resnet18", "encoder_depth": 3, "decoder_channels": [16, 8, 8], "batch_size": 8,
                "epochs": 1},
    "interpret": {"methods": ["gradcam", "layercam"], "images": 6, "steps": 4, "gallery": 2},
    "invariance": {"transforms": ["rotation", "brightness"], "steps": 3, "images": 6,
                   "cam_methods": ["gradcam"]},
}  # fmt: skip


@pytest.fixture(scope="session")
def fundus_run(tmp_path_factory) -> Path:
    """The whole fundus chain (quality -> interpret -> invariance -> report), once, through the CLI."""
    import yaml

    from medseg_weak import cli
    from medseg_weak.logs import reset_logging

    root = tmp_path_factory.mktemp("fundus_chain")
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY_FUNDUS, "runs_dir": str(root / "runs")}))
    assert cli.main(["pipeline", "--config", str(config), "-q"]) == 0
    reset_logging()
    return root / "runs" / "fq"
