"""Invariance stage: how much each layer (and each CAM) changes under transformations a model should ignore.

``measure_invariance`` (tmeasures' variance, ANOVA and same-equivariance measures in one streaming
pass), the registered transformation sets, and CAM equivariance.
"""

from __future__ import annotations

import importlib
from typing import Any

from medseg_weak.invariance.api import measure_invariance, measure_invariances
from medseg_weak.invariance.measures import MEASURES
from medseg_weak.invariance.result import InvarianceResult
from medseg_weak.invariance.transforms import (
    TRANSFORMATION_SETS,
    Transformation,
    TransformationSet,
    make_transformation_set,
)

__all__ = [
    "MEASURES",
    "TRANSFORMATION_SETS",
    "CamEquivarianceResult",
    "InvarianceResult",
    "Transformation",
    "TransformationSet",
    "cam_equivariance",
    "make_transformation_set",
    "measure_invariance",
    "measure_invariances",
]

# CAM equivariance pulls in pytorch-grad-cam through explain/: loaded on first use only.
_LAZY = {"cam_equivariance", "CamEquivarianceResult"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module("medseg_weak.invariance.cam_equivariance"), name)
