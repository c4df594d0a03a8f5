"""``predict``: grade images with any classifier of the project, batched, into ``predictions.csv``.

One function for every model kind; a small adapter per kind (:data:`MODEL_KINDS`) says how to
recognise its checkpoint, rebuild it, and which preprocessing, input size and class names it uses.
An image that cannot be read or preprocessed is listed (``unreadable.csv``), never fatal for the rest.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from medseg_weak.classify.module import ClassifierModule
from medseg_weak.data.cache import ArrayCache
from medseg_weak.data.dataset import PreprocessedDataset
from medseg_weak.data.manifest import Manifest, Record
from medseg_weak.errors import ConfigError, InputError
from medseg_weak.io_utils import atomic_write_text
from medseg_weak.progress import progress_bar
from medseg_weak.quality.data import COLOUR_FUNDUS
from medseg_weak.quality.module import CHECKPOINT_KIND, QualityModule
from medseg_weak.registry import Registry

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom"})


@dataclass(frozen=True)
class Grader:
    """What predicting needs of a model: ``model(x)`` -> class logits, and how to feed it."""

    kind: str
    model: nn.Module
    classes: tuple[str, ...]
    preprocess: str  # a data kind (medseg_weak.data.kinds)
    in_channels: int
    image_size: int | None = None  # None: the caller must say (the run's data.image_size)


@dataclass(frozen=True)
class ModelKind:
    """One model family: its LightningModule, how to spot its checkpoint, and its :class:`Grader`."""

    module_class: type[L.LightningModule]
    detect: Callable[[dict[str, Any]], bool]
    grader: Callable[[Any], Grader]


MODEL_KINDS: Registry[ModelKind] = Registry("model kind")


def _classifier_grader(module: ClassifierModule) -> Grader:
    channels = module.cfg.in_channels or 1  # 0 = the data kind's, unresolved here: built grey
    kind = "mammo" if channels == 1 else COLOUR_FUNDUS
    return Grader("classifier", module.model, tuple(module.labels), kind, channels)


def _quality_grader(module: QualityModule) -> Grader:
    return Grader(
        "quality",
        module.model,
        tuple(module.labels),
        module.preprocess,
        module.cfg.in_channels,
        module.image_size,
    )


MODEL_KINDS.register("classifier")(
    ModelKind(
        ClassifierModule,
        # ClassifierModule checkpoints carry no kind marker: their hyper-parameters are recognisable.
        lambda ckpt: {"backbone", "surgery"} <= set(ckpt.get("hyper_parameters", {}).get("config", {})),
        _classifier_grader,
    )
)
MODEL_KINDS.register(CHECKPOINT_KIND)(
    ModelKind(QualityModule, lambda ckpt: ckpt.get("medseg_kind") == CHECKPOINT_KIND, _quality_grader)
)


def load_grader(
    source: str | Path | L.LightningModule | Grader, kinds: Sequence[str] | None = None
) -> Grader:
    """A :class:`Grader` from a checkpoint file or a module of one of ``kinds`` (default: every kind).

    Raises :class:`InputError` naming the file when it is missing, unreadable, or a checkpoint of
    another kind (a segmenter's, say), with the kinds that would do.
    """
    kinds = list(kinds) if kinds is not None else MODEL_KINDS.names()
    if isinstance(source, Grader):
        return source
    if isinstance(source, L.LightningModule):
        for name in kinds:
            kind = MODEL_KINDS.get(name)
            if isinstance(source, kind.module_class):
                return kind.grader(source.eval())
        raise ConfigError(f"predict: a {type(source).__name__} is none of the model kinds {', '.join(kinds)}")
    path = Path(source)
    if not path.is_file():
        raise InputError(path, "checkpoint not found")
    try:
        # weights_only=False: Lightning checkpoints hold plain hyper-parameter dicts next to tensors.
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises many types for a bad file; all mean "cannot use it"
        raise InputError(path, f"cannot read checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise InputError(path, "is not a Lightning checkpoint of this project")
    found = next((name for name in MODEL_KINDS.names() if MODEL_KINDS.get(name).detect(ckpt)), None)
    if found is None or found not in kinds:
        what = f"a {found} checkpoint" if found else "a checkpoint of none of the model kinds"
        raise InputError(path, f"is {what}; expected one of: {', '.join(kinds)}")
    kind = MODEL_KINDS.get(found)
    module = kind.module_class(**ckpt["hyper_parameters"])
    module.load_state_dict(ckpt["state_dict"])
    return kind.grader(module.eval())


# ----------------------------------------------------------------------------------------- inputs
def image_files(folder: Path) -> list[Path]:
    """The image files under ``folder`` (recursively, sorted), by suffix."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def as_manifest(inputs: Manifest | str | Path | Sequence[str | Path], classes: Sequence[str]) -> Manifest:
    """A mask-free manifest of what to grade: a manifest, a folder of images, or image paths.

    Images given by path are named by their path below the folder (or their stem) without suffix."""
    if isinstance(inputs, Manifest):
        return replace(inputs, records=tuple(replace(r, mask_path="") for r in inputs.records))
    if isinstance(inputs, str | Path) and Path(inputs).is_dir():
        root = Path(inputs)
        paths = image_files(root)
        if not paths:
            raise InputError(root, f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in this folder")
        ids = [p.relative_to(root).with_suffix("").as_posix() for p in paths]
    else:
        paths = [Path(inputs)] if isinstance(inputs, str | Path) else [Path(p) for p in inputs]
        ids = [p.stem for p in paths]
        if len(set(ids)) < len(ids):
            ids = [p.with_suffix("").as_posix() for p in paths]
    records = tuple(Record(id=i, path=str(p), label="", domain="", patient_id="") for i, p in zip(ids, paths))
    return Manifest(records=records, root=Path(), labels=tuple(classes))


class _Images(Dataset):
    """``{"index", "image"}`` per readable image, ``{"index", "error"}`` per unreadable one."""

    def __init__(self, base: PreprocessedDataset, in_channels: int) -> None:
        self.base = base
        self.in_channels = in_channels

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict[str, Any]:
        try:
            arrays, _ = self.base.load(index)
        except InputError as err:
            return {"index": index, "error": err.reason}
        # Not base.item(): that also encodes the label, which images given by path do not have.
        pixels = torch.from_numpy(np.asarray(arrays["pixels"]))
        image = pixels.permute(2, 0, 1) if pixels.ndim == 3 else pixels.unsqueeze(0)
        path = self.base.records[index].path
        return {"index": index, "image": match_channels(image.contiguous(), self.in_channels, path)}


def match_channels(image: Tensor, channels: int, name: str) -> Tensor:
    """``[C, H, W]`` -> ``[channels, H, W]``: colour averaged for a grey model, grey repeated for a
    colour one (each with a logged note), so a mismatch is converted rather than a crash mid-batch."""
    if image.shape[0] == channels:
        return image
    log.warning("%s: %d-channel image given to a %d-channel model; converted", name, image.shape[0], channels)
    if channels == 1:
        return image.mean(dim=0, keepdim=True)
    return image[:1].expand(channels, -1, -1).contiguous()


def _collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    good = [it for it in items if "image" in it]
    return {
        "index": [it["index"] for it in good],
        "image": torch.stack([it["image"] for it in good]) if good else None,
        "failed": [(it["index"], it["error"]) for it in items if "error" in it],
    }


# ----------------------------------------------------------------------------------------- predict
@dataclass(frozen=True)
class Predictions:
    """Per graded image: ``ids[i]``, ``probs[i]`` over ``classes``; ``failed``: (id, path, reason)."""

    ids: list[str]
    classes: tuple[str, ...]
    probs: np.ndarray
    failed: list[tuple[str, str, str]]
    path: Path | None = None

    @property
    def predicted(self) -> list[str]:
        return [self.classes[int(k)] for k in self.probs.argmax(axis=1)] if len(self.ids) else []


@torch.no_grad()
def predict(
    model: str | Path | L.LightningModule | Grader,
    inputs: Manifest | str | Path | Sequence[str | Path],
    out: str | Path | None = None,
    batch_size: int = 32,
    progress: bool = True,
    image_size: int | None = None,
    cache_dir: str | Path | None = None,
    num_workers: int = 0,
    device: str | torch.device | None = None,
    kinds: Sequence[str] | None = None,
) -> Predictions:
    """Grade ``inputs`` (a manifest, a folder of images or image paths) with ``model`` (a checkpoint
    file or a module of one of ``kinds``); write ``out`` (``predictions.csv``) and, when some images
    cannot be read, ``unreadable.csv`` beside it.

    ``image_size`` defaults to the model's own (quality checkpoints record it); a classifier needs it
    given (its run's ``data.image_size``). Batches run on ``device`` (default: where the model is).
    """
    grader = load_grader(model, kinds)
    size = image_size or grader.image_size
    if not size:
        raise ConfigError(
            f"predict: a {grader.kind} checkpoint does not record its input size; "
            "pass image_size (its run's data.image_size)"
        )
    if batch_size < 1:
        raise ConfigError(f"predict: batch_size must be at least 1; got {batch_size}")
    manifest = as_manifest(inputs, grader.classes)
    cache = ArrayCache(cache_dir) if cache_dir else None
    images = _Images(
        PreprocessedDataset(manifest, grader.preprocess, size, cache, domains=[]), grader.in_channels
    )
    loader = DataLoader(images, batch_size, num_workers=num_workers, collate_fn=_collate)
    net = grader.model.eval()
    target = torch.device(device) if device is not None else next(net.parameters()).device
    net.to(target)
    records = manifest.records
    indices: list[int] = []
    probs: list[np.ndarray] = []
    failed: list[tuple[str, str, str]] = []
    with progress_bar(len(images), f"predict ({grader.kind})", enabled=progress) as advance:
        for batch in loader:
            for index, reason in batch["failed"]:
                failed.append((records[index].id, str(manifest.image_path(records[index])), reason))
            if batch["image"] is not None:
                logits = net(batch["image"].to(target))
                probs.append(logits.float().softmax(dim=1).cpu().numpy())
                indices += batch["index"]
            advance(len(batch["index"]) + len(batch["failed"]))
    if failed:
        log.warning(
            "%d of %d image(s) could not be graded; listed in unreadable.csv", len(failed), len(images)
        )
    result = Predictions(
        ids=[records[i].id for i in indices],
        classes=grader.classes,
        probs=np.concatenate(probs) if probs else np.zeros((0, len(grader.classes)), np.float32),
        failed=failed,
        path=Path(out) if out is not None else None,
    )
    if out is not None:
        labelled = isinstance(inputs, Manifest)
        write_predictions_csv(
            Path(out), [records[i] for i in indices] if labelled else result.ids, grader.classes, result.probs
        )
        if failed:
            write_failures_csv(Path(out).with_name("unreadable.csv"), failed)
    return result


def write_predictions_csv(
    path: Path,
    rows: Sequence[Record] | Sequence[str],
    classes: Sequence[str],
    probs: Sequence[Sequence[float]],
) -> Path:
    """id, (domain, label when ``rows`` are records), predicted, ``p_<class>`` per class."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    labelled = bool(rows) and isinstance(rows[0], Record)
    writer.writerow(
        ["id", *(["domain", "label"] if labelled else []), "predicted", *(f"p_{c}" for c in classes)]
    )
    for row, p in zip(rows, probs):
        p = [float(v) for v in p]
        predicted = classes[max(range(len(p)), key=p.__getitem__)]
        ident = [row.id, row.domain, row.label] if isinstance(row, Record) else [row]
        writer.writerow([*ident, predicted, *(f"{v:.5f}" for v in p)])
    return atomic_write_text(path, buf.getvalue())


def write_failures_csv(path: Path, failed: Sequence[tuple[str, str, str]]) -> Path:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["id", "path", "reason"])
    writer.writerows(failed)
    return atomic_write_text(path, buf.getvalue())
