"""CAMs over a data set -> files: per image a float16 CAM, a uint8 pseudo-mask and an overlay PNG.

Streaming and resumable: images are processed in batches and each image's files are written
atomically, its ``meta/<id>.json`` last, so an image with a meta file is complete; an interrupted run
rerun with the same command skips those and ends with the same bytes as an uninterrupted one.
``--shard i/n`` splits the images between processes, each writing only its own files; the index is
assembled from the meta files.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image as PILImage

from medseg_weak.classify.module import ClassifierModule
from medseg_weak.config import CamConfig, Config
from medseg_weak.core.overlap import pseudo_mask_overlap, saliency_scores
from medseg_weak.data.dataset import PreprocessedDataset, preprocessed_from_cache
from medseg_weak.data.manifest import Manifest, Record
from medseg_weak.data.prepare import open_cache
from medseg_weak.errors import ConfigError, InputError
from medseg_weak.explain.cams import compute_cams
from medseg_weak.explain.masks import cam_to_mask, compute_threshold, is_degenerate, mask_statistics
from medseg_weak.explain.overlay import overlay
from medseg_weak.io_utils import atomic_write, atomic_write_bytes, atomic_write_text
from medseg_weak.rundir import RunDir

log = logging.getLogger(__name__)
STAGE = "cams"
INDEX_COLUMNS = (
    "id",
    "domain",
    "label",
    "split",
    "cam_path",
    "mask_path",
    "overlay_path",
    "method",
    "layer",
    "target",
    "threshold_rule",
    "threshold",
    "degenerate",
    "fg_fraction",
    "ignored",
    "dice",
    "iou",
    "pointing",
    "relevance_mass",
)


@dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str | None) -> Shard:
        if not text:
            return cls()
        try:
            i, n = (int(v) for v in text.split("/"))
        except ValueError:
            raise ConfigError(f"--shard must look like i/n (e.g. 0/4); got '{text}'") from None
        if not 0 <= i < n:
            raise ConfigError(f"--shard {text}: need 0 <= i < n")
        return cls(i, n)

    def owns(self, position: int) -> bool:
        return position % self.count == self.index


def load_classifier(checkpoint: Path) -> ClassifierModule:
    if not Path(checkpoint).is_file():
        raise InputError(
            checkpoint, "classifier checkpoint not found (train it first: medseg-weak train-classifier)"
        )
    try:
        module = ClassifierModule.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=False)
    except Exception as err:  # truncated, not a checkpoint, or another model's: all mean "cannot use it"
        raise InputError(
            checkpoint, f"not a medseg-weak classifier checkpoint ({type(err).__name__}: {err})"
        ) from None
    return module.eval()


def target_index(cam: CamConfig, labels: list[str]) -> int | None:
    if cam.target == "predicted":
        return None
    if cam.target not in labels:
        raise ConfigError(
            f"'cams.target' is '{cam.target}'; valid: predicted or a class: {', '.join(labels)}"
        )
    return labels.index(cam.target)


def generate_cams(
    cfg: Config,
    manifest: Manifest,
    out: Path,
    checkpoint: Path,
    shard: Shard = Shard(),
    evaluate: bool = False,
    progress: Callable[[int], None] | None = None,
    device: str | None = None,
) -> list[dict[str, Any]]:
    """Write CAMs, pseudo-masks and overlays for every image of ``manifest`` this shard owns.

    Returns the rows of ``index.csv`` (all shards' meta files found so far)."""
    module = load_classifier(checkpoint)
    labels = module.labels
    target = target_index(cfg.cams, labels)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = module.model.to(device).eval()
    layer = cfg.cams.layer
    if layer not in model.cam_layers():
        raise ConfigError(f"'cams.layer' is '{layer}'; valid: {', '.join(model.cam_layers())}")
    cache = open_cache(cfg, RunDir(out.parent))
    dataset = PreprocessedDataset(manifest, cfg.data.kind, cfg.data.image_size, cache)
    todo = [i for i, r in enumerate(dataset.records) if shard.owns(i) and not _done(out, r)]
    if progress is not None:
        progress(len([i for i in range(len(dataset)) if shard.owns(i)]) - len(todo))
    for start in range(0, len(todo), cfg.cams.batch_size):
        chunk = todo[start : start + cfg.cams.batch_size]
        loaded = [dataset.load(i) for i in chunk]
        images = torch.stack([dataset.item(i, a)["image"] for i, (a, _) in zip(chunk, loaded)]).to(device)
        cams = (
            compute_cams(
                model,
                images,
                target_layer=layer,
                method=cfg.cams.method,
                targets=target,
                batch_size=cfg.cams.batch_size,
                aug_smooth=cfg.cams.aug_smooth,
            )
            .float()
            .cpu()
            .numpy()
        )
        for i, (arrays, geometry), cam in zip(chunk, loaded, cams):
            _write_image_outputs(out, cfg.cams, dataset.records[i], arrays, geometry, cam, labels, evaluate)
            if progress is not None:
                progress(1)
    return write_index(out, manifest)


def _done(out: Path, record: Record) -> bool:
    return (out / "meta" / f"{record.id}.json").is_file()


def _write_image_outputs(
    out: Path,
    cam_cfg: CamConfig,
    record: Record,
    arrays: dict,
    geometry: dict,
    cam: np.ndarray,
    labels: list[str],
    evaluate: bool,
) -> None:
    region = arrays["region"].astype(bool)
    cam = np.where(region, cam, 0.0).astype(np.float32)  # nothing outside the breast is evidence
    mask = cam_to_mask(cam, region, cam_cfg.mask, image=_grey(arrays["pixels"]))
    try:
        pre = preprocessed_from_cache(arrays, geometry)
        cam_original = pre.to_original(cam, order=1).astype(np.float16)
        mask_original = pre.to_original(mask, order=0).astype(np.uint8)
    except (TypeError, ValueError) as err:  # a cache entry from another preprocessing version, say
        raise InputError(record.path, f"cannot map the CAM back to the original image ({err})") from err

    def save_npy(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, cam_original)

    atomic_write(out / "cam" / f"{record.id}.npy", save_npy)
    atomic_write_bytes(out / "mask" / f"{record.id}.png", _png(mask_original))
    atomic_write_bytes(out / "overlay" / f"{record.id}.png", _png(overlay(arrays["pixels"], cam, mask)))
    threshold = compute_threshold(cam, region, cam_cfg.mask)
    meta: dict[str, Any] = {
        "id": record.id,
        "domain": record.domain,
        "label": record.label,
        "split": record.split,
        "cam_path": f"cam/{record.id}.npy",
        "mask_path": f"mask/{record.id}.png",
        "overlay_path": f"overlay/{record.id}.png",
        "method": cam_cfg.method,
        "layer": cam_cfg.layer,
        "target": cam_cfg.target,
        "threshold_rule": _rule_name(cam_cfg),
        "threshold": "" if threshold is None else round(float(threshold), 6),
        "degenerate": bool(is_degenerate(cam, region)),
        "fg_fraction": round(mask_statistics(mask)["fg_fraction"], 6),
    }
    if evaluate and "mask" in arrays:
        truth = arrays["mask"] > 0
        scores = {**pseudo_mask_overlap(mask, truth), **saliency_scores(cam, truth)}
        meta.update({k: round(v, 6) if v == v else "" for k, v in scores.items()})
    atomic_write_text(out / "meta" / f"{record.id}.json", json.dumps(meta, sort_keys=True) + "\n")


def _grey(pixels: np.ndarray) -> np.ndarray:
    return pixels.mean(axis=-1) if pixels.ndim == 3 else pixels


def _rule_name(cam_cfg: CamConfig) -> str:
    rule = cam_cfg.mask
    if rule.low is not None and rule.high is not None:
        return f"low={rule.low},high={rule.high}"
    name = (
        rule.threshold
        if rule.threshold not in ("fixed", "percentile", "max_fraction")
        else f"{rule.threshold}:{rule.value}"
    )
    return name + (f"±{rule.ignore_band}" if rule.ignore_band else "")


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def write_index(out: Path, manifest: Manifest) -> list[dict[str, Any]]:
    """Assemble index.csv from every meta file present, in manifest order (whatever shard wrote it)."""
    rows = []
    for record in manifest.records:
        meta = out / "meta" / f"{record.id}.json"
        if meta.is_file():
            rows.append(json.loads(meta.read_text()))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=INDEX_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "index.csv", buf.getvalue())
    return rows
