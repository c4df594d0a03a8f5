"""Invariance stage: how much each layer (and each CAM) changes under transformations a model should ignore.

``measure_invariance`` (tmeasures' variance, ANOVA and same-equivariance measures in one streaming
pass) and the registered transformation sets. CAM equivariance lives in
:mod:`medseg_weak.invariance.cam_equivariance`, not imported here because it loads pytorch-grad-cam.
"""

from __future__ import annotations

from medseg_weak.lazy import lazy_exports

_EXPORTS = {
    "measure_invariance": "api",
    "measure_invariances": "api",
    "MEASURES": "measures",
    "InvarianceResult": "result",
    "TRANSFORMATION_SETS": "transforms",
    "Transformation": "transforms",
    "TransformationSet": "transforms",
    "make_transformation_set": "transforms",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
