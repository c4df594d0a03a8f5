"""The in-memory image every reader returns and every preprocessing step consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Image:
    """Decoded pixels in display orientation plus the acquisition metadata we rely on.

    ``pixels`` is float32, HxW (grey) or HxWx3 (colour), scaled to [0, 1] with bright meaning dense
    tissue (MONOCHROME1 already inverted), so downstream code never looks at DICOM semantics again.
    ``meta`` keys (present only when known): modality, manufacturer, laterality ('L'/'R'), view,
    photometric_interpretation, bits_stored, pixel_spacing (row, col) in mm, patient_id, source.
    """

    pixels: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.pixels.shape)

    @property
    def is_colour(self) -> bool:
        return self.pixels.ndim == 3
