"""Invariance stage: how much each layer (and each CAM) changes under transformations a model should ignore.

``measure_invariance`` (tmeasures' variance, ANOVA and same-equivariance measures in one streaming
pass) and the registered transformation sets. CAM equivariance lives in
:mod:`medseg_weak.invariance.cam_equivariance`, not imported here because it loads pytorch-grad-cam.
"""

from __future__ import annotations

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
    "InvarianceResult",
    "Transformation",
    "TransformationSet",
    "make_transformation_set",
    "measure_invariance",
    "measure_invariances",
]
