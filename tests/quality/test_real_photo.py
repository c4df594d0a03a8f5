"""Synthetic-to-real sanity: a quality model trained on the built-in benchmark grades a REAL fundus
photograph (scikit-image's bundled ``retina()``, no download) worse as it is degraded step by step.

The photograph is first brought to the benchmark's exposure: its field of view is ~1.4x brighter
(red-channel mean 0.80) than the synthetic Good photographs (0.57), which the benchmark's own grading
calls mildly over-exposed, so the untouched photo already reads as Usable-ish and a first step of
under-exposure makes it look *better* (P(Good) 0.25 -> 0.38 at gain 0.6, measured). The gain comes
from the training data (ratio of the red-channel means), not from a tuned constant.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
import skimage.data
import torch
from scipy.ndimage import gaussian_filter

from medseg_weak.config import SynthConfig
from medseg_weak.data.image import Image
from medseg_weak.data.manifest import load_manifest
from medseg_weak.data.splits import split_patients
from medseg_weak.data.synthetic import generate
from medseg_weak.quality.data import QualityDataset, preprocess_colour_fundus
from medseg_weak.quality.predict import load_grader
from medseg_weak.quality.train import fit_quality
from tests.quality.conftest import tiny_config

SIZE = 96  # at 64 px the blur steps barely survive the resize and P(Good) did not fall with blur


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:  # sigma as a fraction of the image side
    return gaussian_filter(img, (sigma * img.shape[0], sigma * img.shape[0], 0)) if sigma else img


def _under_expose(img: np.ndarray, gain: float) -> np.ndarray:
    return img * gain


def _uneven(img: np.ndarray, strength: float) -> np.ndarray:
    """Darkening that grows from 20 % of the width towards the right edge (a shadowed side)."""
    ramp = np.clip((np.arange(img.shape[1]) / img.shape[1] - 0.2) / 0.7, 0, 1)
    return img * (1 - strength * ramp)[None, :, None]


STEPS = {
    "blur": (_blur, [0.0, 0.006, 0.012, 0.024]),
    "under-exposure": (_under_expose, [1.0, 0.6, 0.35, 0.2]),
    "uneven illumination": (_uneven, [0.0, 0.4, 0.65, 0.9]),
}


def _red_mean(pixels: np.ndarray, region: np.ndarray) -> float:
    return float(pixels[..., 0][region].mean())


@pytest.mark.slow
def test_degraded_real_photograph_is_graded_worse(tmp_path):
    synth = SynthConfig(kind="fundus", n_per_hospital=40, hospitals=3, size=96)
    manifest = split_patients(load_manifest(generate(tmp_path / "data", synth, seed=0)), 0.2, 0.0, seed=0)
    train = manifest.subset([r for r in manifest.records if r.split == "train"])
    val = manifest.subset([r for r in manifest.records if r.split == "val"])
    cfg = tiny_config(epochs=12, batch_size=16, decoder_channels=(32, 16, 8))
    fit_quality(cfg, train, val, tmp_path / "run", SIZE, cache_dir=tmp_path / "cache", progress=False)
    grader = load_grader(tmp_path / "run" / "last.ckpt")

    good = QualityDataset(train.subset([r for r in train.records if r.label == "Good"]), SIZE, None)
    benchmark = np.median(
        [_red_mean(item["image"].permute(1, 2, 0).numpy(), item["region"].numpy()) for item in good]
    )
    photo = skimage.data.retina().astype(np.float32) / 255
    pre = preprocess_colour_fundus(Image(photo, {}), SIZE)
    photo = np.clip(photo * (benchmark / _red_mean(pre.pixels, pre.mask)), 0, 1)

    for name, (degrade, levels) in STEPS.items():
        images = [
            preprocess_colour_fundus(Image(degrade(photo, level).astype(np.float32), {}), SIZE)
            for level in levels
        ]
        x = torch.stack([torch.from_numpy(p.pixels).permute(2, 0, 1) for p in images])
        with torch.no_grad():
            p_good = grader.model(x).softmax(dim=1)[:, 0].tolist()
        # Falls at every step until it saturates: once P(Good) is below 1e-3 the photograph is already
        # graded not-Good with certainty, and differences of 1e-8 between two such steps are noise.
        falls = all(b < a or max(a, b) < 1e-3 for a, b in pairwise(p_good))
        assert falls and p_good[-1] < p_good[0] - 0.1, f"{name}: P(Good) {p_good} does not fall"
