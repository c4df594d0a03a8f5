"""Evaluation: overlap and distance metrics, per-hospital tables, held-out protocols."""

from __future__ import annotations

import importlib
import sys
import types
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


class _CallableModule(types.ModuleType):
    """``mw.evaluate(run)`` is the API function, and ``medseg_weak.evaluate`` this package: importing
    the package makes Python bind the attribute ``medseg_weak.evaluate`` to it, replacing the
    function, so the package itself forwards calls to the API function."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from medseg_weak.api import evaluate

        return evaluate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
