"""`medseg-weak inspect`: a focused page for chosen images, with each picture in separate layers.

Per image: the original (original geometry, shorter side >= 256 px), the CAM heat map with an opacity
slider, the pseudo-mask, truth and UNet contours each toggled on and off, the per-image metrics (CAM
quality, every method's test scores) and the classifier's probabilities. Layers are transparent PNGs
stacked in the page, so the toggles need no re-rendering. Written to ``<run>/inspect/`` (outside
``report/``, which the report stage rewrites)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medseg_weak.config import Config
from medseg_weak.data.manifest import Manifest
from medseg_weak.errors import InputError
from medseg_weak.io_utils import atomic_write_bytes, atomic_write_text
from medseg_weak.report.gallery import COLOURS, HEAT, MIN_SIDE, png_bytes, read_mask, resize_float
from medseg_weak.report.sections.weak_labels import SEGMENTER, image_scores
from medseg_weak.rundir import RunDir

INSPECT = "inspect"


def select_ids(
    scores: dict[str, dict[str, Any]],
    ids: Sequence[str] = (),
    worst: int | None = None,
    hospital: str | None = None,
) -> list[str]:
    """``ids`` as given (each must have a CAM), else the images of ``hospital`` (all hospitals when
    None), the ``worst`` of them by pseudo-mask Dice first when ``worst`` is set."""
    unknown = [i for i in ids if i not in scores]
    if unknown:
        raise InputError(", ".join(unknown), "no such image id with a CAM in this run (see cams/index.csv)")
    if ids:
        return list(ids)
    chosen = [i for i, row in scores.items() if hospital is None or row.get("domain") == hospital]
    if not chosen:
        raise InputError(str(hospital), f"no image of this hospital; hospitals: {_domains(scores)}")
    if worst is not None:
        chosen.sort(key=lambda i: float(scores[i].get("dice") or 0.0))
        chosen = chosen[:worst]
    return chosen


def _domains(scores: dict[str, dict[str, Any]]) -> str:
    return ", ".join(sorted({str(r.get("domain")) for r in scores.values()}))


def _rgba(shape: tuple[int, int], mask: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    from skimage.segmentation import find_boundaries

    layer = np.zeros((*shape, 4), np.uint8)
    edge = find_boundaries(mask, mode="thick")
    layer[edge, :3] = colour
    layer[edge, 3] = 255
    return layer


def _layers(
    pixels: np.ndarray, cam: np.ndarray, masks: dict[str, np.ndarray | None]
) -> dict[str, np.ndarray]:
    scale = max(1.0, MIN_SIDE / min(pixels.shape[:2]))
    shape = (round(pixels.shape[0] * scale), round(pixels.shape[1] * scale))
    from PIL import Image as PILImage

    bilinear, nearest = PILImage.Resampling.BILINEAR, PILImage.Resampling.NEAREST
    image = resize_float(pixels, shape, bilinear) if scale > 1 else pixels
    grey = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=-1)
    cam = np.clip(resize_float(cam, shape, bilinear) if scale > 1 else cam, 0, 1)
    heat = np.concatenate([HEAT[(cam * 255).astype(np.uint8)], cam[..., None]], axis=-1)  # alpha = CAM
    out = {"image": (np.clip(grey, 0, 1) * 255).astype(np.uint8), "cam": (heat * 255).astype(np.uint8)}
    for name, mask in masks.items():
        if mask is not None:
            big = resize_float(mask.astype(np.float32), shape, nearest) > 0 if scale > 1 else mask
            out[name] = _rgba(shape, big, COLOURS[name])
    return out


def _probabilities(path: Path) -> dict[str, dict[str, str]]:
    if not path.is_file():
        return {}
    with path.open(newline="") as f:
        return {r["id"]: r for r in csv.DictReader(f)}


def _test_scores(path: Path) -> dict[str, list[dict[str, str]]]:
    rows: dict[str, list[dict[str, str]]] = {}
    if path.is_file():
        with path.open(newline="") as f:
            for r in csv.DictReader(f):
                rows.setdefault(r["id"], []).append(r)
    return rows


def write_inspect(
    cfg: Config,
    run: RunDir,
    manifest: Manifest,
    ids: Sequence[str] = (),
    worst: int | None = None,
    hospital: str | None = None,
) -> Path:
    """Write ``<run>/inspect/index.html`` for the chosen images; return its path."""
    from medseg_weak.data.io import read_image
    from medseg_weak.report.render import environment

    scores = image_scores(run.root)
    if not scores:
        raise InputError(run.stage("cams") / "index.csv", "no CAMs in this run; run medseg-weak cams first")
    chosen = select_ids(scores, ids, worst, hospital)
    records = {r.id: r for r in manifest.records}
    state = run.read_state(SEGMENTER)
    predictions: dict[str, np.ndarray] = {}
    if state and state.get("complete") and state.get("best_checkpoint"):
        from medseg_weak.report.predict import unet_predictor

        predict = unet_predictor(cfg, manifest, run, run.stage(SEGMENTER) / state["best_checkpoint"])
        predictions = predict([records[i] for i in chosen])
    out = run.stage(INSPECT)
    probs = _probabilities(run.stage("classifier") / "predictions.csv")
    tests = _test_scores(run.stage("eval") / "per_image.csv")
    items = []
    for image_id in chosen:
        record = records[image_id]
        cams = run.stage("cams")
        masks = {
            "pseudo-mask": _eq(read_mask(cams / "mask" / f"{image_id}.png"), 1),
            "truth": _gt(read_mask(manifest.mask_path(record))),
            "UNet": predictions.get(image_id),
        }
        pixels = read_image(manifest.image_path(record)).pixels
        cam = np.load(cams / "cam" / f"{image_id}.npy").astype(np.float32)
        layers = {}
        for name, array in _layers(pixels, cam, masks).items():
            rel = f"layers/{image_id}/{name}.png"
            atomic_write_bytes(out / rel, png_bytes(array))
            layers[name] = rel
        p = probs.get(image_id, {})
        items.append(
            {
                "id": image_id,
                "row": scores[image_id],
                "layers": layers,
                "colours": {k: "rgb({},{},{})".format(*COLOURS[k]) for k in layers if k in COLOURS},
                "probabilities": {k[2:]: v for k, v in p.items() if k.startswith("p_")},
                "predicted": p.get("predicted", ""),
                "tests": tests.get(image_id, []),
            }
        )
    html = environment().get_template("inspect.html.j2").render(title=run.root.name, items=items)
    path = atomic_write_text(out / "index.html", html)
    path.chmod(0o644)
    return path


def _eq(mask: np.ndarray | None, value: int) -> np.ndarray | None:
    return None if mask is None else mask == value


def _gt(mask: np.ndarray | None) -> np.ndarray | None:
    return None if mask is None else mask > 0
