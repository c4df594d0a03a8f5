"""The project's own classifier and dataset: per-hospital invariance and CAM equivariance end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg_weak.classify.model import Classifier
from medseg_weak.data.dataset import PreprocessedDataset
from medseg_weak.data.manifest import load_manifest
from medseg_weak.invariance import make_transformation_set, measure_invariance
from medseg_weak.invariance.cam_equivariance import cam_equivariance


@pytest.mark.slow  # generates the session's synthetic benchmark when no other test has
def test_per_hospital_invariance_and_cam_equivariance_on_the_built_in_benchmark(synth_mammo):
    dataset = PreprocessedDataset(load_manifest(synth_mammo), "mammo", 48)
    hospitals = [r.domain for r in dataset.records]
    torch.manual_seed(0)
    model = Classifier.create("tiny_cnn", 1, 4).eval()
    layers = [name for name, _ in model.named_modules() if name.startswith("backbone.body.")][:3]
    curve = make_transformation_set("vendor_curve", steps=4)

    result = measure_invariance(model, dataset, curve, layers, groups=hospitals, batch_size=16)
    assert set(result.groups) == set(hospitals) and result.n_samples == len(dataset)
    for group in result.groups.values():
        assert group.n_samples == hospitals.count(group.group)
        assert all(np.isfinite(v) for v in group.per_layer.values())

    turns = make_transformation_set("rotation", low=0, high=270, steps=4)
    cams = cam_equivariance(model, [dataset[i] for i in range(6)], turns, methods=["gradcam"], targets=3)
    assert [r.transformation for r in cams.rows] == turns.labels
    assert cams.rows[0].pearson == pytest.approx(1.0) and cams.rows[0].n_images == 6
