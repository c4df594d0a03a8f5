"""Explain stage: class activation maps and the pseudo-masks made from them."""

from __future__ import annotations

import importlib
from typing import Any

# The CAM API is importable from the package, but lazily: `import medseg_weak.explain.masks` must not
# pull in torch and pytorch-grad-cam (masks.py is deliberately torch-free).
_LAZY = {
    "CAM_METHODS": "medseg_weak.explain.cam_methods",
    "FAST_METHODS": "medseg_weak.explain.cam_methods",
    "compute_cams": "medseg_weak.explain.cams",
    "vit_reshape_transform": "medseg_weak.explain.cams",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
