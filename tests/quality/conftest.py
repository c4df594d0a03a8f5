"""Fixtures of the quality tests: a tiny built-in fundus benchmark and a quality model trained on it."""

from __future__ import annotations

from pathlib import Path

import pytest

from medseg_weak.config import QualityConfig

#: A shallow UNet, as tests/segment uses: resnet18 stem and two stages, small decoder.
TINY = {"encoder": "resnet18", "encoder_depth": 3, "decoder_channels": (16, 8, 8), "batch_size": 8}
SIZE = 64


def tiny_config(**changes) -> QualityConfig:
    return QualityConfig(**{**TINY, "epochs": 1, **changes})


def split_parts(manifest):
    """(train, val, test) manifests of a patient split."""
    from medseg_weak.data.splits import split_patients

    split = split_patients(manifest, 0.25, 0.25, seed=0)
    return tuple(split.subset([r for r in split.records if r.split == s]) for s in ("train", "val", "test"))


@pytest.fixture(scope="session")
def synth_fundus(tmp_path_factory) -> Path:
    """3 cameras x 8 photographs at 64 px (with degradation bit-masks); returns the manifest path."""
    from medseg_weak.config import SynthConfig
    from medseg_weak.data.synthetic import generate

    out = tmp_path_factory.mktemp("synth_fundus")
    return generate(out, SynthConfig(kind="fundus", n_per_hospital=8, hospitals=3, size=64), seed=0)


@pytest.fixture(scope="session")
def quality_run(synth_fundus, tmp_path_factory):
    """A quality model trained 2 epochs on ``synth_fundus``: (output folder, metrics)."""
    from medseg_weak.data.manifest import load_manifest
    from medseg_weak.quality.train import fit_quality

    train, val, test = split_parts(load_manifest(synth_fundus))
    out = tmp_path_factory.mktemp("quality_run")
    metrics = fit_quality(tiny_config(epochs=2), train, val, out, SIZE, test=test, progress=False)
    return out, metrics
