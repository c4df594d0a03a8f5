"""Image-quality grading metrics as EyeQ reports them (Fu et al. 2019, ``utils/metric.py``), overall
and per camera, computed with torchmetrics' functional API from predicted probabilities.

Keys (flat, scalar unless noted): ``accuracy``; per class ``f1_<c>``, ``sensitivity_<c>``,
``precision_<c>``, ``specificity_<c>``, ``auroc_<c>``; ``auroc`` (mean one-vs-rest AUROC);
``{f1,sensitivity,precision,specificity}_{micro,macro}``; ``n``; ``confusion`` (rows = truth,
columns = prediction, a list of lists).

Edge cases, decided here:
* a class absent from the labels (or the only class present) has no one-vs-rest AUROC: its
  ``auroc_<c>`` is NaN and the mean AUROC averages the classes that have one (torchmetrics would
  count it as 0 and drag the mean down on small per-camera splits); NaN when no class has one;
* precision / F1 of a class never predicted are 0 (torchmetrics' ``zero_division``), as in EyeQ;
* single-label micro precision = micro sensitivity = micro F1 = accuracy (every wrong prediction is
  one false positive and one false negative); micro specificity pools the classes' TN and FP.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from torch import Tensor
from torchmetrics.functional.classification import (
    binary_auroc,
    multiclass_accuracy,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
    multiclass_specificity,
)

_PER_CLASS = {
    "f1": multiclass_f1_score,
    "sensitivity": multiclass_recall,
    "precision": multiclass_precision,
    "specificity": multiclass_specificity,
}


def eyeq_metrics(probs: Tensor, labels: Tensor, classes: Sequence[str]) -> dict[str, Any]:
    """Every EyeQ metric of ``probs`` ``[N, K]`` (rows sum to 1) against integer ``labels`` ``[N]``."""
    k = len(classes)
    if probs.ndim != 2 or probs.shape[1] != k or labels.shape != probs.shape[:1]:
        raise ValueError(f"probs {tuple(probs.shape)} / labels {tuple(labels.shape)} do not fit {k} classes")
    probs, labels = probs.float(), labels.long()
    out: dict[str, Any] = {"n": len(labels)}
    if len(labels) == 0:
        return out
    out["accuracy"] = float(multiclass_accuracy(probs, labels, k, average="micro"))
    for name, fn in _PER_CLASS.items():
        per_class = fn(probs, labels, k, average=None)
        out.update({f"{name}_{c}": float(v) for c, v in zip(classes, per_class)})
        out[f"{name}_macro"] = float(per_class.mean())
        out[f"{name}_micro"] = float(fn(probs, labels, k, average="micro"))
    aurocs = [one_vs_rest_auroc(probs[:, i], labels == i) for i in range(k)]
    out.update({f"auroc_{c}": a for c, a in zip(classes, aurocs)})
    defined = [a for a in aurocs if not math.isnan(a)]
    out["auroc"] = sum(defined) / len(defined) if defined else float("nan")
    out["confusion"] = multiclass_confusion_matrix(probs, labels, k).tolist()
    return out


def one_vs_rest_auroc(scores: Tensor, positive: Tensor) -> float:
    """AUROC of ``scores`` for the boolean ``positive``; NaN unless both groups are present."""
    n_pos = int(positive.sum())
    if n_pos == 0 or n_pos == len(positive):
        return float("nan")
    return float(binary_auroc(scores, positive.long()))


def eyeq_by_domain(
    probs: Tensor, labels: Tensor, domains: Tensor, classes: Sequence[str], domain_names: Sequence[str]
) -> dict[str, Any]:
    """:func:`eyeq_metrics` overall (plain keys) and per camera (``<camera>/<key>``, cameras present)."""
    out = eyeq_metrics(probs, labels, classes)
    for d in sorted(set(domains.tolist())):
        keep = domains == d
        per = eyeq_metrics(probs[keep], labels[keep], classes)
        out.update({f"{domain_names[d]}/{key}": value for key, value in per.items()})
    return out


def scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """The loggable part of a metrics dict (drops confusion matrices and NaNs)."""
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and not math.isnan(float(v))
    }
