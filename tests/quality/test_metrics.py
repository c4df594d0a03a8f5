"""EyeQ metrics on hand-made predictions whose every value is worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from medseg_weak.quality.metrics import eyeq_by_domain, eyeq_metrics, one_vs_rest_auroc, scalars

CLASSES = ["Good", "Usable", "Reject"]
# Predicted classes: 0, 0, 1, 2, 0, 2 for truths 0, 1, 1, 2, 2, 2.
PROBS = torch.tensor(
    [[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.5, 0.4, 0.1], [0.1, 0.1, 0.8]]
)
LABELS = torch.tensor([0, 1, 1, 2, 2, 2])


def test_known_values():
    m = eyeq_metrics(PROBS, LABELS, CLASSES)
    assert m["n"] == 6
    assert m["accuracy"] == pytest.approx(4 / 6)
    # Good: TP 1, FP 2, FN 0, TN 3. Usable: TP 1, FP 0, FN 1, TN 4. Reject: TP 2, FP 0, FN 1, TN 3.
    expected = {
        "precision": (1 / 3, 1.0, 1.0),
        "sensitivity": (1.0, 0.5, 2 / 3),
        "specificity": (3 / 5, 1.0, 1.0),
        "f1": (0.5, 2 / 3, 0.8),
    }
    for name, values in expected.items():
        for c, v in zip(CLASSES, values):
            assert m[f"{name}_{c}"] == pytest.approx(v, abs=1e-6), f"{name}_{c}"
        assert m[f"{name}_macro"] == pytest.approx(sum(values) / 3, abs=1e-6)
    # Single-label micro averages: precision = sensitivity = F1 = accuracy; specificity pools TN / FP.
    for name in ("precision", "sensitivity", "f1"):
        assert m[f"{name}_micro"] == pytest.approx(4 / 6, abs=1e-6)
    assert m["specificity_micro"] == pytest.approx(10 / 12, abs=1e-6)
    # One-vs-rest AUROC: Good 1 (0.8 above every other score); Usable: 0.3 beats 3 of 4 negatives,
    # 0.7 all 4 -> 7/8; Reject: 0.7 and 0.8 beat all 3 negatives, 0.1 ties the three at 0.1 -> 5/6.
    assert m["auroc_Good"] == pytest.approx(1.0)
    assert m["auroc_Usable"] == pytest.approx(7 / 8)
    assert m["auroc_Reject"] == pytest.approx(5 / 6, abs=1e-6)
    assert m["auroc"] == pytest.approx((1 + 7 / 8 + 5 / 6) / 3, abs=1e-6)
    assert m["confusion"] == [[1, 0, 0], [1, 1, 0], [1, 0, 2]]


def test_perfect_and_absent_class():
    labels = torch.tensor([0, 0, 2, 2])
    probs = torch.nn.functional.one_hot(labels, 3).float()
    m = eyeq_metrics(probs, labels, CLASSES)
    assert m["accuracy"] == 1.0 and m["auroc_Good"] == 1.0 and m["auroc_Reject"] == 1.0
    # Usable never occurs: no AUROC for it, and the mean is over the classes that have one (not 2/3).
    assert math.isnan(m["auroc_Usable"])
    assert m["auroc"] == 1.0
    # Never predicted and never true: precision, sensitivity and F1 are 0 by torchmetrics' zero_division.
    assert m["precision_Usable"] == 0.0 and m["f1_Usable"] == 0.0
    assert "auroc_Usable" not in scalars(m) and "confusion" not in scalars(m)


def test_one_vs_rest_auroc_undefined():
    assert math.isnan(one_vs_rest_auroc(torch.tensor([0.1, 0.9]), torch.tensor([True, True])))
    assert one_vs_rest_auroc(torch.tensor([0.1, 0.9]), torch.tensor([False, True])) == 1.0


def test_per_camera():
    domains = torch.tensor([0, 0, 0, 1, 1, 1])
    m = eyeq_by_domain(PROBS, LABELS, domains, CLASSES, ["C1", "C2"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["C1/n"] == 3 and m["C2/n"] == 3
    assert m["C1/accuracy"] == pytest.approx(2 / 3)  # rows 0-2: right, wrong, right
    assert m["C2/accuracy"] == pytest.approx(2 / 3)  # rows 3-5: right, wrong, right
    assert m["C2/confusion"] == [[0, 0, 0], [0, 0, 0], [1, 0, 2]]


def test_shape_errors():
    with pytest.raises(ValueError, match="do not fit 3 classes"):
        eyeq_metrics(PROBS[:, :2], LABELS, CLASSES)
