"""CAMs over a data set -> files: per image a float16 CAM, a uint8 pseudo-mask and an overlay PNG.

Generation is ``trainer.predict`` of :class:`CamWriter`, so Lightning's strategy decides where it runs
(one process, or DDP over GPUs and nodes: each rank explains and writes only the images its sampler
hands it, none twice; see :mod:`medseg_weak.core.predict_loop`). Streaming and resumable: each
image's files are written atomically, its ``meta/<id>.json`` last, so an image with a meta file is
complete; an interrupted run rerun with the same command skips those and ends with the same bytes as
an uninterrupted one. ``--shard i/n`` (scheduler job arrays) gives the loop a subset of the images;
after the loop rank 0 assembles ``index.csv`` from the meta files of every shard and rank.
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

import lightning as L
import numpy as np
import torch
from PIL import Image as PILImage
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from medseg_weak.classify.module import ClassifierModule
from medseg_weak.classify.norm_stats import HospitalStatistics
from medseg_weak.config import CamConfig, Config
from medseg_weak.core.overlap import pseudo_mask_overlap, saliency_scores
from medseg_weak.core.predict_loop import predict_trainer, runs_in_one_process
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


def hospital_statistics(
    cfg: Config, module: ClassifierModule, dataset: PreprocessedDataset
) -> HospitalStatistics | None:
    """With ``classifier.test_bn: hospital``, each hospital's BatchNorm statistics from all of its
    images in the manifest (not only those still to explain: a resumed run uses the same ones)."""
    if cfg.classifier.test_bn != "hospital":
        return None
    loader = DataLoader(dataset, batch_size=cfg.classifier.batch_size, num_workers=cfg.data.num_workers)
    return HospitalStatistics.from_batches(
        module.model,
        ((b["image"], [dataset.domains[int(d)] for d in b["domain"]]) for b in loader),
        cfg.classifier.batch_size,
    )


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
) -> list[dict[str, Any]]:
    """Write CAMs, pseudo-masks and overlays for every image of ``manifest`` this shard owns, through
    Lightning's predict loop on ``cams.accelerator`` / ``cams.devices`` / ``cams.strategy``.

    Returns the rows of ``index.csv`` (all shards' and ranks' meta files found so far)."""
    module = load_classifier(checkpoint)
    labels = module.labels
    target = target_index(cfg.cams, labels)
    if cfg.cams.layer not in module.model.cam_layers():
        raise ConfigError(
            f"'cams.layer' is '{cfg.cams.layer}'; valid: {', '.join(module.model.cam_layers())}"
        )
    cache = open_cache(cfg, RunDir(out.parent))
    dataset = PreprocessedDataset(manifest, cfg.data.kind, cfg.data.image_size, cache)
    c = cfg.cams
    trainer = predict_trainer(c, default_root_dir=out)
    owned = [i for i in range(len(dataset)) if shard.owns(i)]
    todo = [i for i in owned if not _done(out, dataset.records[i])]
    # All ranks must split the same list, so none may write before every rank has listed: the ranks'
    # rendezvous in trainer.predict ensures it, or this barrier when a process group already exists
    # (the classifier trained under DDP in the same processes).
    trainer.strategy.barrier("cams listed")
    if progress is not None:
        progress(len(owned) - len(todo))
        if runs_in_one_process(trainer):  # a terminal bar cannot follow the loop into spawned ranks
            trainer.callbacks.append(_Advance(progress))
    if todo:
        loader = DataLoader(
            _CamItems(dataset, todo),
            batch_size=c.batch_size,
            num_workers=cfg.data.num_workers,
            collate_fn=_collate,
        )
        statistics = hospital_statistics(cfg, module, dataset)
        writer = CamWriter(module.model, c, target, labels, dataset.records, out, evaluate, statistics)
        trainer.predict(writer, loader, return_predictions=False)
    # Every rank's meta files exist before the index is read. (Nothing to do: no loop, no process group,
    # and each rank may take itself for rank 0; they then write the same index, atomically.)
    trainer.strategy.barrier("cams written")
    return write_index(out, manifest) if trainer.is_global_zero else read_index_rows(out, manifest)


class CamWriter(L.LightningModule):
    """``predict_step``: the batch's CAMs, and each image's files written (meta file last).

    Holds the classifier's network only (not its training module), so the loop places and moves
    nothing but what CAMs need."""

    def __init__(
        self,
        model: nn.Module,
        cam_cfg: CamConfig,
        target: int | None,
        labels: list[str],
        records: list[Record],
        out: Path,
        evaluate: bool,
        statistics: HospitalStatistics | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.statistics = statistics  # per-hospital BatchNorm statistics (classifier.test_bn)
        self.cam_cfg = cam_cfg
        self.target = target
        self.labels = labels
        self.records = records
        self.out = out
        self.evaluate = evaluate

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> int:
        """Returns the number of images written (with ``return_predictions=False`` nothing is kept)."""
        c = self.cam_cfg

        def cams_of(images: Tensor) -> Tensor:
            return compute_cams(
                self.model,
                images,
                target_layer=c.layer,
                method=c.method,
                targets=self.target,
                batch_size=c.batch_size,
                aug_smooth=c.aug_smooth,
                fixed_batches=True,  # a resumed run's shorter last batch must round like a full one
            )

        with torch.enable_grad():  # the loop runs under no_grad; Grad-CAM differentiates the score
            if self.statistics is None:
                cams = cams_of(batch["image"])
            else:
                domains = [self.records[i].domain for i in batch["position"]]
                cams = self.statistics.apply(batch["image"], domains, cams_of)
        for i, arrays, geometry, cam in zip(
            batch["position"], batch["arrays"], batch["geometry"], cams.float().cpu().numpy()
        ):
            _write_image_outputs(
                self.out, c, self.records[i], arrays, geometry, cam, self.labels, self.evaluate
            )
        return len(batch["position"])


class _CamItems(Dataset):
    """The images still to explain (positions in the manifest), with the arrays and geometry that
    writing their files in original geometry needs, loaded once."""

    def __init__(self, dataset: PreprocessedDataset, positions: list[int]) -> None:
        self.dataset = dataset
        self.positions = positions

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, k: int) -> dict[str, Any]:
        i = self.positions[k]
        arrays, geometry = self.dataset.load(i)
        image = self.dataset.item(i, arrays)["image"]
        return {"image": image, "position": i, "arrays": arrays, "geometry": geometry}


def _collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Images stacked; positions, arrays and geometry kept per image (the loop moves only tensors)."""
    return {
        "image": torch.stack([it["image"] for it in items]),
        **{key: [it[key] for it in items] for key in ("position", "arrays", "geometry")},
    }


class _Advance(L.Callback):
    """The caller's progress bar, advanced by the images of each finished batch."""

    def __init__(self, advance: Callable[[int], None]) -> None:
        self.advance = advance

    def on_predict_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self.advance(outputs)


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
    rows = read_index_rows(out, manifest)
    write_index_rows(out, rows)
    return rows


def read_index_rows(out: Path, manifest: Manifest) -> list[dict[str, Any]]:
    """The meta file of every finished image, in manifest order."""
    rows = []
    for record in manifest.records:
        meta = out / "meta" / f"{record.id}.json"
        if meta.is_file():
            rows.append(json.loads(meta.read_text()))
    return rows


def write_index_rows(out: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=INDEX_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "index.csv", buf.getvalue())
