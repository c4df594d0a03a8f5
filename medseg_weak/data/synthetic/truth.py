"""Mask files of the mammography benchmark, with their truth: dense and tissue pixel counts, cue flag.

The PNG's text chunks let a resumed run rebuild every record from the files without redrawing.
Labels follow the dense fraction (see :func:`density_label`), computed from the mask actually drawn.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from PIL import PngImagePlugin

from medseg_weak.data.manifest import DENSITY_LABELS
from medseg_weak.errors import InputError
from medseg_weak.io_utils import atomic_write

#: Upper dense-fraction bound of classes A, B and C (D is everything above).
DENSITY_BOUNDS: tuple[float, float, float] = (0.25, 0.50, 0.75)


def density_label(fraction: float) -> str:
    """BI-RADS density class of a dense fraction (of the breast area without pectoral muscle)."""
    return DENSITY_LABELS[int(np.searchsorted(DENSITY_BOUNDS, fraction, side="right"))]


@dataclass(frozen=True)
class MaskTruth:
    """What a mask PNG records besides its pixels: counts for the density fraction and the cue flag.

    ``params`` names the generator settings that drew the image (seed, height, cue strength), so a
    rerun with other settings in the same folder redraws it instead of reusing it.
    """

    dense_pixels: int
    tissue_pixels: int
    cue: bool
    params: str = ""

    @property
    def dense_fraction(self) -> float:
        return self.dense_pixels / max(1, self.tissue_pixels)

    @property
    def label(self) -> str:
        return density_label(self.dense_fraction)


def write_mask(path: Path, dense: np.ndarray, truth: MaskTruth) -> Path:
    info = PngImagePlugin.PngInfo()
    info.add_text("medseg_dense_pixels", str(truth.dense_pixels))
    info.add_text("medseg_tissue_pixels", str(truth.tissue_pixels))
    info.add_text("medseg_cue", str(int(truth.cue)))
    info.add_text("medseg_params", truth.params)
    image = PILImage.fromarray(np.where(dense, 255, 0).astype(np.uint8), mode="L")
    return atomic_write(Path(path), lambda tmp: image.save(tmp, format="PNG", pnginfo=info))


def read_mask_truth(path: Path) -> MaskTruth:
    """Read a synthetic mask's truth, recounting the dense pixels from the mask itself.

    Raises :class:`InputError` if the file is unreadable, lacks the text chunks, or its pixels no
    longer match the recorded count (so a resumed run redraws it).
    """
    try:
        with PILImage.open(path) as image:
            text = dict(getattr(image, "text", {}))
            mask = np.asarray(image)
        truth = MaskTruth(
            dense_pixels=int(text["medseg_dense_pixels"]),
            tissue_pixels=int(text["medseg_tissue_pixels"]),
            cue=text["medseg_cue"] == "1",
            params=text.get("medseg_params", ""),
        )
    except (OSError, KeyError, ValueError) as err:
        raise InputError(path, f"not a synthetic mammography mask ({err})") from err
    counted = int((mask == 255).sum())
    if counted != truth.dense_pixels:
        raise InputError(path, f"mask has {counted} dense pixels but records {truth.dense_pixels}")
    return truth
