"""Evaluation: overlap and distance metrics, per-hospital tables, held-out protocols."""

from __future__ import annotations

import importlib
from typing import Any

# Importable from the package, lazily: the metrics pull in MONAI and torch.
_LAZY = {
    "segmentation_metrics": "medseg_weak.evaluate.metrics",
    "batch_segmentation_metrics": "medseg_weak.evaluate.metrics",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
