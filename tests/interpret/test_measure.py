"""interpret_classifier end to end on tiny data, its outputs on disk, and its bad-input errors."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from medseg_weak.classify.model import Classifier
from medseg_weak.errors import ConfigError, RegistryError
from medseg_weak.interpret import (
    METRICS,
    headline,
    interpret_classifier,
    summary_table,
    write_interpret_outputs,
)
from tests.interpret.conftest import SmallCnn, WindowModel, square_images


@pytest.fixture(scope="module")
def result(trained_cnn):
    images, labels, masks = square_images(8, seed=60)
    regions = torch.ones_like(masks)
    regions[:, :, :2] = False  # a "black border" the maps should not use
    return interpret_classifier(
        trained_cnn,
        images,
        labels=["absent" if v == 0 else "square" for v in labels.tolist()],
        masks=masks,
        regions=regions,
        domains=["H1", "H2"] * 4,
        methods=("gradcam", "layercam"),
        steps=4,
        targets=1,
        ids=[f"img{i}" for i in range(8)],
        road_percentiles=(50,),
    )


def test_result_holds_per_image_values_for_methods_and_baselines(result):
    assert list(result.methods) == ["gradcam", "layercam", "centre", "random"]
    for scores in result.methods.values():
        assert scores.deletion_curve.shape == scores.insertion_curve.shape == (8, 5)
        assert scores.maps.shape == (8, 16, 16) and set(scores.values) == set(METRICS)
    # the trained model's Grad-CAM finds the square in the images that have one (class 1 explained)
    gradcam = result.methods["gradcam"]
    has_square = np.arange(8) % 2 == 1
    assert np.nanmean(gradcam.metric("pointing")[has_square]) == 1.0
    assert np.isnan(gradcam.metric("pointing")[~has_square]).all()  # no mask: nothing to point at
    assert not gradcam.flagged and result.methods["random"].metric("relevance_mass")[1] < 0.3
    assert set(result.sanity) == {"gradcam", "layercam"} and result.data_randomisation == {}


def test_tables_group_by_method_class_and_domain(result):
    by_class = summary_table(result, "class")
    assert "gradcam | square" in by_class.rows and by_class.cell("gradcam | square", "pointing").n == 4
    by_domain = summary_table(result, "domain")
    assert by_domain.cell("random | H1", "deletion_auc").n == 4


@pytest.mark.slow  # ~10 s of matplotlib on the shared 2-core machine
def test_outputs_are_written(result, tmp_path):
    paths = write_interpret_outputs(result, tmp_path, gallery_size=1)
    names = {p.name for p in paths}
    assert {"metrics.json", "per_image.csv", "by_method.csv", "by_class.md", "by_domain.csv"} <= names
    assert {"curves.png", "randomisation.png", "gallery_gradcam.png", "gallery_random.png"} <= names
    assert all(p.stat().st_size > 0 for p in paths)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["images"] == 8 and metrics["methods"]["gradcam"]["sanity"]["passed"] is True
    assert metrics["methods"]["gradcam"]["pointing"]["n"] == 4
    rows = list(csv.DictReader((tmp_path / "per_image.csv").open()))
    assert len(rows) == 4 * 8 and rows[0]["id"] == "img0"


def test_the_callers_model_is_left_as_it_was(trained_cnn):
    model = Classifier.create("tiny_cnn", 1, 2).train()
    model.backbone.body[0].eval()  # a partly frozen model stays partly frozen
    before = {k: v.clone() for k, v in model.state_dict().items()}
    interpret_classifier(
        model, torch.rand(2, 1, 16, 16), ["a", "b"], methods=("gradcam",), steps=2, road_percentiles=(50,)
    )
    assert model.training and not model.backbone.body[0].training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_bad_input_is_named(trained_cnn):
    images = torch.rand(2, 1, 16, 16)
    with pytest.raises(RegistryError, match="CAM method 'gradcamm'"):
        interpret_classifier(trained_cnn, images, ["a", "b"], methods=("gradcam", "gradcamm"))
    with pytest.raises(ValueError, match="'masks' must be"):
        interpret_classifier(trained_cnn, images, ["a", "b"], masks=np.zeros((2, 8, 8)))
    with pytest.raises(ValueError, match="'labels' has 1 entries"):
        interpret_classifier(trained_cnn, images, ["a"])
    with pytest.raises(ConfigError, match=r"'SmallCnn' cannot take images of shape \(3, 16, 16\)"):
        interpret_classifier(trained_cnn, torch.rand(2, 3, 16, 16), ["a", "b"], methods=("gradcam",))
    with pytest.raises(ConfigError, match=r"CAM method 'gradcam' cannot run on 'WindowModel'.*cam_layer"):
        interpret_classifier(WindowModel(), torch.rand(2, 1, 32, 32), ["a", "b"], methods=("gradcam",))


def test_random_label_model_adds_the_data_randomisation_test_and_road_can_be_off(trained_cnn):
    images, labels, _ = square_images(4, seed=61)
    torch.manual_seed(2)
    result = interpret_classifier(
        trained_cnn,
        images,
        labels.tolist(),
        methods=("gradcam",),
        steps=2,
        road_percentiles=(),
        random_label_model=SmallCnn(),
    )
    assert set(result.data_randomisation) == {"gradcam"}
    assert np.isnan(result.methods["gradcam"].metric("road_morf")).all()
    summary = headline(result)
    assert summary["methods"]["gradcam"]["data_randomisation"]["threshold"] == 0.5
    assert summary["methods"]["gradcam"]["road_morf"]["n"] == 0
