"""Sanity checks (Adebayo et al. 2018): model-dependent maps pass, model-independent ones fail."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg_weak.errors import ConfigError
from medseg_weak.interpret.sanity import (
    SANITY_THRESHOLD,
    cam_explainer,
    cascading_randomisation,
    data_randomisation,
    randomisable_layers,
    spearman_per_image,
    ssim_per_image,
)
from tests.interpret.conftest import SmallCnn, WindowModel, square_images


def _image_explainer(model, images, ids):
    """Maps that are the image itself: an edge-detector-like explanation that ignores the model."""
    return images[:, 0]


def test_trained_model_passes_the_cascading_randomisation_and_stays_untouched(trained_cnn):
    images, labels, _ = square_images(6, seed=50)
    before = {k: v.clone() for k, v in trained_cnn.state_dict().items()}
    result = cascading_randomisation(trained_cnn, images, labels, cam_explainer("gradcam"), "gradcam")
    assert result.steps == ("head", "body.2", "body.0")  # from the top layer down
    assert result.spearman.shape == result.ssim.shape == (3, 6)
    assert result.passed and result.final_spearman < SANITY_THRESHOLD
    after = trained_cnn.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_model_independent_explanation_fails(trained_cnn):
    images, labels, _ = square_images(4, seed=51)
    result = cascading_randomisation(trained_cnn, images, labels, _image_explainer, "image")
    assert not result.passed and result.final_spearman == pytest.approx(1.0)
    assert np.allclose(result.ssim, 1.0)


def test_data_randomisation_fails_for_the_same_model_and_passes_for_another(trained_cnn):
    images, labels, _ = square_images(6, seed=52)
    explain = cam_explainer("gradcam")
    same = data_randomisation(trained_cnn, trained_cnn, images, labels, explain, "gradcam")
    assert not same.passed and same.steps == ("random_labels",)
    torch.manual_seed(3)
    other = data_randomisation(trained_cnn, SmallCnn().eval(), images, labels, explain, "gradcam")
    assert other.passed


def test_randomisation_is_seeded_and_leaves_the_global_rng_alone(trained_cnn):
    images, labels, _ = square_images(2, seed=53)
    explain = cam_explainer("gradcam")
    torch.manual_seed(11)
    a = cascading_randomisation(trained_cnn, images, labels, explain, seed=4)
    after_first = torch.rand(1)
    torch.manual_seed(11)
    b = cascading_randomisation(trained_cnn, images, labels, explain, seed=4)
    assert np.array_equal(a.spearman, b.spearman) and torch.equal(after_first, torch.rand(1))


def test_similarity_known_values():
    a = torch.tensor([[[0.0, 1.0], [2.0, 3.0]]])
    assert spearman_per_image(a, a * 10).tolist() == pytest.approx([1.0])
    assert spearman_per_image(a, -a).tolist() == pytest.approx([-1.0])
    flat = torch.zeros(1, 2, 2)
    assert spearman_per_image(flat, flat).tolist() == [1.0] and spearman_per_image(a, flat).tolist() == [0.0]
    maps = torch.rand(2, 16, 16)
    assert ssim_per_image(maps, maps).tolist() == pytest.approx([1.0, 1.0])


def test_a_model_without_learnable_layers_is_refused():
    assert randomisable_layers(WindowModel()) == []
    with pytest.raises(ConfigError, match="no conv or linear layer"):
        cascading_randomisation(
            WindowModel(), torch.rand(1, 1, 32, 32), torch.ones(1).long(), _image_explainer
        )
