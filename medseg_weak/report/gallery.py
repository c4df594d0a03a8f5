"""The overlay gallery: per image, the original picture with the CAM heat map and three contours.

Drawn in the original image's geometry (not the model's 96-px view): the original pixels, the CAM and
pseudo-mask the CAM stage already mapped back, the ground truth, and the UNet's prediction mapped
back with the preprocessing geometry. The UNet runs in batches, and only on images whose picture is
not cached: a picture's file name is a digest of everything drawn in it, so an unchanged overlay is
copied from the cache instead of being predicted and rendered again.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from PIL import Image as PILImage
from skimage.segmentation import find_boundaries

from medseg_weak.data.manifest import Manifest, Record
from medseg_weak.errors import InputError
from medseg_weak.io_utils import atomic_write_bytes

RENDER_VERSION = 3  # bump when the drawing changes: cached pictures are keyed by it
MIN_SIDE = 256  # the shorter side of a full-size picture is at least this (upscaled when smaller)
THUMB_SIDE = 128
HEAT_OPACITY = 0.55  # at the CAM's maximum; the heat map fades out where the CAM is low
HEAT = colormaps["jet"](np.linspace(0, 1, 256))[:, :3].astype(np.float32)
# contour colours (RGB), also shown in the page's legend
COLOURS = {"pseudo-mask": (255, 255, 255), "truth": (0, 230, 0), "UNet": (255, 0, 255)}


@dataclass(frozen=True)
class GalleryItem:
    """One image of the gallery: its picture files (relative to the page) and what the filters use."""

    id: str
    domain: str
    label: str
    split: str
    degenerate: bool
    dice: float | None  # pseudo-mask vs truth (cams/index.csv), None without ground truth
    unet_dice: float | None  # UNet vs truth on the test images (eval/per_image.csv)
    full: str
    thumb: str


def _digest(paths: list[Path | None], extra: dict[str, Any]) -> str:
    h = hashlib.sha256(json.dumps({**extra, "version": RENDER_VERSION}, sort_keys=True).encode())
    for path in paths:
        if path is not None and path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _contour(picture: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int]) -> None:
    picture[find_boundaries(mask, mode="thick")] = colour


def draw(
    image: np.ndarray, cam: np.ndarray, contours: dict[str, np.ndarray | None], min_side: int = MIN_SIDE
) -> np.ndarray:
    """RGB uint8: ``image`` (HxW or HxWx3 in [0, 1]) under the ``cam`` heat map, with a contour per
    named mask (colours from COLOURS); upscaled first so the shorter side is at least ``min_side``,
    which keeps one-pixel contours readable."""
    scale = max(1.0, min_side / min(image.shape[:2]))
    shape = (round(image.shape[0] * scale), round(image.shape[1] * scale))
    if scale > 1:
        image = resize_float(image, shape, PILImage.Resampling.BILINEAR)
        cam = resize_float(cam, shape, PILImage.Resampling.BILINEAR)
    grey = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=-1)
    cam = np.clip(cam, 0, 1)[..., None]
    heat = HEAT[(cam[..., 0] * 255).astype(np.uint8)]
    # unlike explain.overlay's uniform blend, the opacity follows the CAM so low-evidence tissue
    # stays readable in the original grey levels
    blend = (1 - HEAT_OPACITY * cam) * grey + HEAT_OPACITY * cam * heat
    picture = (np.clip(blend, 0, 1) * 255).astype(np.uint8)
    for name, mask in contours.items():
        if mask is not None:
            if scale > 1:
                mask = resize_float(mask.astype(np.float32), shape, PILImage.Resampling.NEAREST) > 0
            _contour(picture, mask, COLOURS[name])
    return picture


def resize_float(array: np.ndarray, shape: tuple[int, int], how: PILImage.Resampling) -> np.ndarray:
    """Float arrays through PIL's 32-bit float mode, a channel at a time: several times faster than
    skimage's resize for the few hundred pictures of a gallery."""
    size = (shape[1], shape[0])
    if array.ndim == 3:
        return np.stack([resize_float(array[..., c], shape, how) for c in range(array.shape[2])], axis=-1)
    return np.asarray(PILImage.fromarray(array.astype(np.float32), mode="F").resize(size, how))


def png_bytes(picture: np.ndarray) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(picture).save(buf, format="PNG", optimize=False, compress_level=1)
    return buf.getvalue()


def _thumb(picture: np.ndarray) -> bytes:
    img = PILImage.fromarray(picture)
    img.thumbnail((THUMB_SIDE * 4, THUMB_SIDE), PILImage.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def read_mask(path: Path | None) -> np.ndarray | None:
    if path is None or not path.is_file():
        return None
    try:
        return np.asarray(PILImage.open(path))
    except OSError as err:
        raise InputError(path, f"cannot read the mask ({err})") from None


Predictor = Callable[[list[Record]], dict[str, np.ndarray]]  # records -> {id: bool mask, original geometry}


def render_gallery(
    manifest: Manifest,
    cams: Path,
    out: Path,
    cache: Path,
    predict: Predictor | None,
    model_digest: str,
    scores: dict[str, dict[str, Any]],
    batch_size: int = 32,
) -> list[GalleryItem]:
    """Pictures of every image that has a CAM into ``out`` (``full/`` and ``thumb/``), cached in ``cache``.

    ``predict`` maps the UNet over a batch of records (None: no UNet contour); ``model_digest``
    identifies the UNet so a retrained one redraws; ``scores``: per id the index.csv row (degenerate,
    dice) plus ``unet_dice`` where evaluated."""
    from medseg_weak.data.io import read_image

    records = [r for r in manifest.records if (cams / "cam" / f"{r.id}.npy").is_file()]
    keys = {}
    for r in records:
        sources = [manifest.image_path(r), manifest.mask_path(r), cams / "cam" / f"{r.id}.npy"]
        sources.append(cams / "mask" / f"{r.id}.png")
        keys[r.id] = _digest(sources, {"id": r.id, "unet": model_digest if predict else ""})
    todo = [r for r in records if not (cache / f"{keys[r.id]}.png").is_file()]
    cache.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        predictions = predict(chunk) if predict is not None else {}
        for r in chunk:
            pixels = read_image(manifest.image_path(r)).pixels
            cam = np.load(cams / "cam" / f"{r.id}.npy").astype(np.float32)
            pseudo = read_mask(cams / "mask" / f"{r.id}.png")
            truth = read_mask(manifest.mask_path(r))
            contours = {
                "pseudo-mask": None if pseudo is None else pseudo == 1,
                "truth": None if truth is None else truth > 0,
                "UNet": predictions.get(r.id),
            }
            picture = draw(pixels, cam, contours)
            atomic_write_bytes(cache / f"{keys[r.id]}.thumb.png", _thumb(picture))
            atomic_write_bytes(cache / f"{keys[r.id]}.png", png_bytes(picture))  # last: marks the entry done
    items = []
    for folder in ("full", "thumb"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    for r in records:
        key = keys[r.id]
        full, thumb = f"full/{r.id}.png", f"thumb/{r.id}.png"
        shutil.copyfile(cache / f"{key}.png", out / full)
        shutil.copyfile(cache / f"{key}.thumb.png", out / thumb)
        row = scores.get(r.id, {})
        items.append(
            GalleryItem(
                r.id,
                r.domain,
                r.label,
                r.split or "",
                str(row.get("degenerate", "")).lower() in ("true", "1"),
                _float(row.get("dice")),
                _float(row.get("unet_dice")),
                f"{out.name}/{full}",
                f"{out.name}/{thumb}",
            )
        )
    return items


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number else None
