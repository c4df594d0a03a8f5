"""ROAD: our batched version gives pytorch-grad-cam's numbers on the same inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_grad_cam.metrics.road import (
    NoisyLinearImputer,
    ROADLeastRelevantFirst,
    ROADLeastRelevantFirstAverage,
    ROADMostRelevantFirst,
    ROADMostRelevantFirstAverage,
)
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget

from medseg_weak.classify.model import Classifier
from medseg_weak.errors import ConfigError
from medseg_weak.explain.cams import compute_cams
from medseg_weak.interpret.road import impute, road_scores
from tests.interpret.conftest import WindowModel, window_map

# float32 scores of differently sized batches: measured equal to ~1e-7
ATOL = 1e-5


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = Classifier.create("tiny_cnn", 1, 3).eval()
    images = torch.rand(3, 1, 16, 16)
    ids = torch.tensor([0, 2, 1])
    cams = compute_cams(model, images, targets=ids)
    return model, images, cams, ids


@pytest.mark.parametrize(
    "order, library, p", [("morf", ROADMostRelevantFirst, 80), ("lerf", ROADLeastRelevantFirst, 20)]
)
def test_one_percentile_equals_the_library_with_its_noise(setup, order, library, p):
    model, images, cams, ids = setup
    torch.manual_seed(7)  # the imputer's noise: both draw it in the same order
    lib = library(p)(images, cams.numpy(), [ClassifierOutputTarget(int(i)) for i in ids], model)
    torch.manual_seed(7)
    ours = road_scores(model, images, cams, ids, order=order, percentiles=[p], score="logit")
    assert ours.shape == (3, 1) and np.allclose(ours[:, 0].numpy(), lib, atol=ATOL)


@pytest.mark.parametrize(
    "order, library", [("morf", ROADMostRelevantFirstAverage), ("lerf", ROADLeastRelevantFirstAverage)]
)
def test_average_over_percentiles_equals_the_library(setup, order, library):
    model, images, cams, ids = setup
    percentiles = [10, 50, 90]
    torch.manual_seed(3)
    targets = [ClassifierOutputSoftmaxTarget(int(i)) for i in ids]
    lib = library(percentiles)(images, cams.numpy(), targets, model)
    torch.manual_seed(3)
    ours = road_scores(model, images, cams, ids, order=order, percentiles=percentiles, batch_size=4)
    assert np.allclose(ours.mean(dim=1).numpy(), lib, atol=ATOL)


@pytest.mark.parametrize("channels", [1, 3])
def test_imputation_equals_the_librarys_noisy_linear_imputer(channels):
    # a big hole (a 10x12 block) plus scattered pixels, colour or grey, the library's noise and seed
    g = torch.Generator().manual_seed(0)
    image = torch.rand(channels, 20, 24, generator=g)
    removed = torch.rand(20, 24, generator=g) < 0.3
    removed[4:14, 6:18] = True
    torch.manual_seed(5)
    lib = NoisyLinearImputer(noise=0.01)(image, (~removed).float())
    torch.manual_seed(5)
    ours = impute(image[None], removed[None], noise=0.01)[0]
    assert torch.allclose(ours, lib, atol=1e-5)
    assert torch.equal(ours[:, ~removed], image[:, ~removed])  # known pixels untouched


def test_morf_on_the_true_evidence_drops_the_score_and_lerf_keeps_it():
    # MoRF at 90 imputes the top 10 % (the 64-pixel window is 6 % of the image: all of it, from the
    # zeros around it); LeRF at 10 keeps the top 10 %, which holds the whole window.
    x = torch.zeros(2, 1, 32, 32)
    x[:, :, 8:16, 8:16] = 1.0
    ids = torch.ones(2, dtype=torch.long)
    morf = road_scores(WindowModel(), x, window_map(), ids, "morf", [90], "logit", noise=0.0)
    lerf = road_scores(WindowModel(), x, window_map(), ids, "lerf", [10], "logit", noise=0.0)
    assert morf[:, 0].tolist() == pytest.approx([-4.0, -4.0], abs=0.05)
    assert lerf[:, 0].tolist() == pytest.approx([0.0, 0.0], abs=1e-6)


def test_bad_order_and_empty_percentiles_are_named(setup):
    model, images, cams, ids = setup
    with pytest.raises(ConfigError, match="ROAD order"):
        road_scores(model, images, cams, ids, order="both")
    with pytest.raises(ConfigError, match="road_percentiles"):
        road_scores(model, images, cams, ids, percentiles=[])
