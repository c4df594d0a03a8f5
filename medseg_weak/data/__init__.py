"""Data stage: reading images, manifests, preprocessing, splits, caching and the built-in benchmarks.

``read_image`` / ``read_mask`` are importable from the package, but lazily: ``import medseg_weak.data``
stays cheap (no pydicom, Pillow or tifffile) for the modules that need only the manifest or splits.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Image": "medseg_weak.data.image",
    "read_image": "medseg_weak.data.io",
    "read_mask": "medseg_weak.data.io",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
