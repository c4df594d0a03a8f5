"""Classification metrics through torchmetrics, overall and per hospital.

Balanced accuracy and quadratic-weighted kappa matter here: density classes are imbalanced and
ordinal (calling a D breast A is worse than calling it C).
"""

from __future__ import annotations

import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassCohenKappa,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassRecall,
)


def classification_metrics(num_classes: int) -> MetricCollection:
    """accuracy, balanced_accuracy, auroc, f1 (macro), kappa (quadratic), confusion matrix."""
    return MetricCollection(
        {
            "accuracy": MulticlassAccuracy(num_classes, average="micro"),
            "balanced_accuracy": MulticlassRecall(num_classes, average="macro"),
            "auroc": MulticlassAUROC(num_classes, average="macro"),
            "f1": MulticlassF1Score(num_classes, average="macro"),
            "kappa": MulticlassCohenKappa(num_classes, weights="quadratic"),
            "confusion": MulticlassConfusionMatrix(num_classes),
        },
        compute_groups=False,
    )


class HospitalMetrics(torch.nn.Module):
    """One metric collection overall plus one per hospital, fed from (probs, labels, hospital index)."""

    def __init__(self, num_classes: int, domains: list[str]) -> None:
        super().__init__()
        self.domains = list(domains)
        self.overall = classification_metrics(num_classes)
        self.per_domain = torch.nn.ModuleList(classification_metrics(num_classes) for _ in domains)
        self.seen = [False] * len(domains)

    def update(self, probs: torch.Tensor, labels: torch.Tensor, domains: torch.Tensor) -> None:
        self.overall.update(probs, labels)
        for d in torch.unique(domains).tolist():
            keep = domains == d
            self.per_domain[d].update(probs[keep], labels[keep])
            self.seen[d] = True

    def compute(self) -> dict[str, torch.Tensor]:
        """Flat dict: ``accuracy``, ``H1/accuracy``, ..., confusion matrices under ``confusion`` keys."""
        out = dict(self.overall.compute())
        for d, metrics in enumerate(self.per_domain):
            if self.seen[d]:
                out.update({f"{self.domains[d]}/{k}": v for k, v in metrics.compute().items()})
        return out

    def reset(self) -> None:
        self.overall.reset()
        for metrics in self.per_domain:
            metrics.reset()
        self.seen = [False] * len(self.domains)
