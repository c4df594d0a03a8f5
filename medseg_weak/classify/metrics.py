"""Classification metrics through torchmetrics, overall and per hospital.

Balanced accuracy and quadratic-weighted kappa matter here: density classes are imbalanced and
ordinal (calling a D breast A is worse than calling it C).

Under DDP every metric ``compute()`` is a collective, so every rank must run the same ones in the same
order, whatever hospitals its own shard held: per-rank "seen" flags made ranks without a hospital skip
its collectives and deadlock the others. One synced state (probabilities, labels, hospital of every
image) is gathered once instead, and every per-hospital score is computed from the gathered tensors,
identically on every rank. (One metric object per hospital, always computed, does not work either:
torchmetrics stands in an empty 1-D tensor for a rank's empty list state, which an AUROC's N x C
predictions on the other ranks cannot be all-gathered with.)
"""

from __future__ import annotations

import torch
from torchmetrics import Metric
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_auroc,
    multiclass_cohen_kappa,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_recall,
)
from torchmetrics.utilities import dim_zero_cat


def classification_scores(
    probs: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> dict[str, torch.Tensor]:
    """accuracy, balanced_accuracy, auroc, f1 (macro), kappa (quadratic), confusion matrix."""
    return {
        "accuracy": multiclass_accuracy(probs, labels, num_classes, average="micro"),
        "balanced_accuracy": multiclass_recall(probs, labels, num_classes, average="macro"),
        "auroc": multiclass_auroc(probs, labels, num_classes, average="macro"),
        "f1": multiclass_f1_score(probs, labels, num_classes, average="macro"),
        "kappa": multiclass_cohen_kappa(probs, labels, num_classes, weights="quadratic"),
        "confusion": multiclass_confusion_matrix(probs, labels, num_classes),
    }


class HospitalMetrics(Metric):
    """Scores overall and per hospital, fed from (probs, labels, hospital index) batches."""

    full_state_update = False

    def __init__(self, num_classes: int, domains: list[str]) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.domain_names = list(domains)
        self.add_state("probs", default=[], dist_reduce_fx="cat")
        self.add_state("labels", default=[], dist_reduce_fx="cat")
        self.add_state("domains", default=[], dist_reduce_fx="cat")

    def update(self, probs: torch.Tensor, labels: torch.Tensor, domains: torch.Tensor) -> None:
        self.probs.append(probs.float())
        self.labels.append(labels.long())
        self.domains.append(domains.long())

    def compute(self) -> dict[str, torch.Tensor]:
        """Flat dict: ``accuracy``, ``H1/accuracy``, ..., confusion matrices under ``confusion`` keys.

        Every hospital seen on any rank is reported by every rank; one seen on none is left out.
        """
        probs, labels, domains = (dim_zero_cat(s) for s in (self.probs, self.labels, self.domains))
        out = classification_scores(probs, labels, self.num_classes)
        for d in torch.unique(domains).tolist():
            keep = domains == d
            scores = classification_scores(probs[keep], labels[keep], self.num_classes)
            out.update({f"{self.domain_names[d]}/{k}": v for k, v in scores.items()})
        return out
