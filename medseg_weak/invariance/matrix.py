"""The seed study's invariance matrix: one classifier per training augmentation, measured under every
evaluation transformation.

Rows are training augmentations (``invariance.matrix_train``; identity = none), columns evaluation
transformation sets (``invariance.matrix_eval``, default ``invariance.transforms``). A cell is the mean
over the measured layers of one invariance measure (``invariance.measure``) of the row's best
checkpoint on the run's test images. Does training with rotation make a model rotation-invariant, and
does it buy invariance to anything else?

Each row's classifier is an ordinary classifier stage in ``<run>/matrix/<T>/classifier/`` run by the
project's runner, so a rerun skips finished rows and resumes an interrupted one; each row's
measurements go to ``<run>/matrix/<T>/row.json`` cell by cell with the settings they were made with,
and are reused when the settings and the checkpoint match. Everything that can be wrong with the
config (transformation names, layer names) is checked before anything is written.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medseg_weak.classify.stage import ClassifierResult, ClassifierStage
from medseg_weak.config import Config
from medseg_weak.data.datamodule import restrict_classes
from medseg_weak.data.kinds import resolve_kind_defaults
from medseg_weak.data.manifest import Manifest
from medseg_weak.errors import ConfigError
from medseg_weak.invariance.api import measure_invariance
from medseg_weak.invariance.augment import TransformationAugment
from medseg_weak.invariance.measures import MEASURES
from medseg_weak.invariance.transforms import TRANSFORMATION_SETS, TransformationSet, make_transformation_set
from medseg_weak.io_utils import atomic_write, atomic_write_text
from medseg_weak.lock import RunLock
from medseg_weak.rundir import RunDir
from medseg_weak.stages import DataSummary, Runner

log = logging.getLogger(__name__)

__all__ = ["MatrixClassifierStage", "MatrixResult", "matrix_eval_names", "run_invariance_matrix"]

FOLDER = "matrix"
TRAIN_KEY, EVAL_KEY, MEASURE_KEY = "invariance.matrix_train", "invariance.matrix_eval", "invariance.measure"
ROW_VERSION = 1  # bump when a cell's value is computed differently, to invalidate stored rows


@dataclass(frozen=True)
class MatrixResult:
    """``values[i, j]``: the measure of the model trained with ``train[i]`` under ``eval[j]``.

    ``accuracy[T]``: that model's held-out accuracy (the test hospital's when ``data.test_domain`` is
    set, else the test split's); ``paths``: csv, md, png and json in ``folder``."""

    folder: Path
    train: tuple[str, ...]
    eval: tuple[str, ...]
    values: np.ndarray
    accuracy: dict[str, float]
    layers: tuple[str, ...]
    paths: dict[str, Path]


class MatrixClassifierStage(ClassifierStage):
    """A classifier stage trained under one transformation set: the augmentation is in its fingerprint,
    so two rows never share a folder and a row trained otherwise is refused, not silently reused."""

    def __init__(self, augment: TransformationAugment) -> None:
        super().__init__(f"{FOLDER}/{augment.name}/classifier", (augment,))
        self.augment = augment

    def fingerprint(self, cfg: Config) -> dict[str, Any]:
        tset = self.augment.tset
        return {
            **super().fingerprint(cfg),
            "train_augmentation": tset.name,
            "train_params": list(tset.params),
        }


def matrix_eval_names(cfg: Config) -> tuple[str, ...]:
    """The evaluation transformation sets: ``invariance.matrix_eval``, else ``invariance.transforms``."""
    return tuple(cfg.invariance.matrix_eval or cfg.invariance.transforms)


def transformation_set(name: str, steps: int) -> TransformationSet:
    """The named set at its default range, with ``steps`` parameters (0: the set's own default)."""
    return make_transformation_set(name, steps=steps) if steps else make_transformation_set(name)


def check_names(names: Sequence[str], key: str, steps: int) -> None:
    """A ConfigError naming ``key`` for an unknown or repeated set, listing the valid names."""
    unknown = [n for n in names if n not in TRANSFORMATION_SETS]
    if unknown:
        raise ConfigError(
            f"'{key}': unknown transformation set(s) {', '.join(map(repr, unknown))}; "
            f"valid: {', '.join(TRANSFORMATION_SETS.names())}"
        )
    repeated = sorted({n for n in names if list(names).count(n) > 1})
    if repeated:
        raise ConfigError(f"'{key}' names {', '.join(repeated)} twice")
    for name in names:
        try:
            transformation_set(name, steps)
        except ConfigError as err:
            raise ConfigError(f"'{key}': {err}") from None


def check_measure(measure: str, evals: Sequence[str], steps: int) -> None:
    """The measure's name, and spatial evaluation sets for a same-equivariance measure (it maps the
    activations back by T^-1): found now, not after the first row has trained."""
    if measure not in MEASURES:
        raise ConfigError(
            f"'{MEASURE_KEY}': unknown measure '{measure}'; valid: {', '.join(MEASURES.names())}"
        )
    if MEASURES.get(measure).same_equivariance:
        flat = [name for name in evals if not transformation_set(name, steps).spatial]
        if flat:
            raise ConfigError(
                f"'{MEASURE_KEY}' is '{measure}', a same-equivariance measure, which needs spatial sets; "
                f"'{EVAL_KEY}' has {', '.join(flat)}. Use an invariance measure, or spatial sets only"
            )


def matrix_layers(cfg: Config) -> list[str]:
    """The layers measured, resolved on an untrained model of the configured architecture (the same
    names as the trained ones), so a mistyped layer fails before any training."""
    from medseg_weak.classify.model import Classifier
    from medseg_weak.invariance.activations import resolve_layers
    from medseg_weak.invariance.layers import default_layers

    c = cfg.classifier
    model = Classifier.create(c.backbone, c.in_channels or 1, 2, c.dropout)
    if cfg.invariance.layers:
        return list(resolve_layers(model, cfg.invariance.layers))
    sample = torch.zeros(1, c.in_channels or 1, cfg.data.image_size, cfg.data.image_size)
    return default_layers(model, sample)


def run_invariance_matrix(
    cfg: Config, run: RunDir, *, force: bool = False, progress: bool = True
) -> MatrixResult:
    """Train one classifier per training augmentation, measure each under every evaluation set, and
    write ``<run>/matrix/matrix.{csv,md,png,json}``.

    ``force``: as everywhere in the project, discard outputs made by a different config (a row trained
    otherwise is retrained); a retrained row's checkpoint changes, so its stored cells are remeasured."""
    cfg = resolve_kind_defaults(cfg)
    inv = cfg.invariance
    train_names, eval_names = tuple(inv.matrix_train), matrix_eval_names(cfg)
    check_names(train_names, TRAIN_KEY, inv.steps)
    check_names(eval_names, EVAL_KEY, inv.steps)
    check_measure(inv.measure, eval_names, inv.steps)
    layers = matrix_layers(cfg)
    stages = [MatrixClassifierStage(augmentation(cfg, name)) for name in train_names]
    with RunLock(run.root):
        # the matrix may be rerun with other evaluation sets or measures in the same run
        run.write_provenance(cfg, force=force, allow=("invariance",))
        from medseg_weak.data.prepare import prepare

        manifest = prepare(cfg, run)
        summary = DataSummary(str(manifest.source), tuple(manifest.labels), tuple(manifest.domains), False)
        Runner.validate(stages, cfg, summary)
        images, ids = matrix_images(cfg, run, restrict_classes(manifest, cfg.classifier.classes))
        rows = []
        for i, stage in enumerate(stages, 1):
            log.info("invariance matrix: row %d/%d, trained with %s", i, len(stages), stage.augment.name)
            result = Runner(cfg, run, force=force, progress=progress).execute([stage], manifest)[stage.name]
            assert isinstance(result, ClassifierResult)
            rows.append(measure_row(cfg, run, stage, result, images, ids, layers, progress))
        return write_matrix(cfg, run, train_names, eval_names, layers, ids, rows)


def augmentation(cfg: Config, name: str) -> TransformationAugment:
    return TransformationAugment(transformation_set(name, cfg.invariance.steps), cfg.seed)


def matrix_images(cfg: Config, run: RunDir, manifest: Manifest) -> tuple[torch.Tensor, list[str]]:
    """The first ``invariance.images`` test images (0: all), taken in turn from each hospital, so a
    small sample still covers every test hospital; as one tensor [N, C, H, W] and their ids."""
    from medseg_weak.data.dataset import PreprocessedDataset
    from medseg_weak.data.prepare import open_cache

    tests = [r for r in manifest.records if r.split == "test"]
    by_domain: dict[str, list[Any]] = {}
    for record in tests:
        by_domain.setdefault(record.domain, []).append(record)
    order = [
        q[i]
        for i in range(max(map(len, by_domain.values()), default=0))
        for q in by_domain.values()
        if i < len(q)
    ]
    chosen = order[: cfg.invariance.images] if cfg.invariance.images else order
    if len(chosen) < 2:
        raise ConfigError(
            f"the invariance matrix needs at least 2 test images; the split has {len(tests)} "
            "(raise data.test_fraction or use more images)"
        )
    dataset = PreprocessedDataset(
        manifest.subset(chosen), cfg.data.kind, cfg.data.image_size, open_cache(cfg, run), manifest.domains
    )
    images = torch.stack([dataset[i]["image"] for i in range(len(dataset))])
    return images, [r.id for r in chosen]


def held_out_accuracy(cfg: Config, metrics: dict[str, Any]) -> tuple[float, dict[str, float]]:
    """(the held-out accuracy, test accuracy overall and per hospital) from a classifier's metrics.json."""
    test = metrics.get("test") or {}
    scores = {
        k: float(v) for k, v in test.items() if k.endswith("accuracy") and not k.endswith("balanced_accuracy")
    }
    key = f"{cfg.data.test_domain}/accuracy" if cfg.data.test_domain else "accuracy"
    return scores.get(key, math.nan), scores


def measure_device(cfg: Config) -> torch.device:
    gpu = cfg.classifier.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return torch.device("cuda" if gpu else "cpu")


def measure_row(
    cfg: Config,
    run: RunDir,
    stage: MatrixClassifierStage,
    result: ClassifierResult,
    images: torch.Tensor,
    ids: list[str],
    layers: list[str],
    progress: bool,
) -> dict[str, Any]:
    """The row's cells, reusing those stored in row.json under the same settings and checkpoint.

    Each cell is written as soon as it is measured: an interrupted row keeps its finished cells."""
    inv = cfg.invariance
    state = run.read_state(stage.name) or {}
    fingerprint = {
        "version": ROW_VERSION,
        "steps": inv.steps,
        "measure": inv.measure,
        "images": ids,
        "layers": layers,
        "checkpoint": state.get("digest", ""),
    }
    path = run.stage(FOLDER) / stage.augment.name / "row.json"
    stored = read_row(path)
    cells = stored.get("cells", {}) if stored.get("fingerprint") == fingerprint else {}
    accuracy, scores = held_out_accuracy(cfg, result.metrics)
    model = None
    for name in matrix_eval_names(cfg):
        if name in cells:
            continue
        if model is None:
            model = result.load_model().model.to(measure_device(cfg))
        measured = measure_invariance(
            model,
            images,
            transformation_set(name, inv.steps),
            layers,
            measure=inv.measure,
            batch_size=inv.batch_size,
            progress=progress,
        )
        per_layer = measured.per_layer
        cells[name] = {"value": finite_mean(per_layer.values()), "per_layer": per_layer}
        row = {"fingerprint": fingerprint, "cells": cells, "accuracy": accuracy, "test_accuracy": scores}
        atomic_write_text(path, json.dumps(_plain(row), indent=2) + "\n")
    return {"cells": cells, "accuracy": accuracy, "test_accuracy": scores}


def read_row(path: Path) -> dict[str, Any]:
    """A stored row.json, or {} if there is none or it cannot be read (then the row is remeasured)."""
    try:
        stored = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return stored if isinstance(stored, dict) else {}


def finite_mean(values: Any) -> float:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return float(np.mean(finite)) if finite else math.nan


def _plain(value: Any) -> Any:
    """NaN / inf as null: matrix.json and row.json stay strict JSON."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _value(cell: dict[str, Any]) -> float:
    v = cell.get("value")
    return math.nan if v is None else float(v)


def write_matrix(
    cfg: Config,
    run: RunDir,
    train: tuple[str, ...],
    evals: tuple[str, ...],
    layers: list[str],
    ids: list[str],
    rows: list[dict[str, Any]],
) -> MatrixResult:
    folder = run.stage(FOLDER)
    values = np.array([[_value(row["cells"][e]) for e in evals] for row in rows], dtype=np.float64)
    accuracy = {t: float(row["accuracy"]) for t, row in zip(train, rows)}
    table = matrix_table(train, evals, values, accuracy)
    paths = {
        "csv": atomic_write_text(folder / "matrix.csv", table_csv(table)),
        "md": atomic_write_text(folder / "matrix.md", table_markdown(table, cfg.invariance.measure)),
        "png": plot_matrix(folder / "matrix.png", train, evals, values, cfg.invariance.measure),
    }
    summary = {
        "measure": cfg.invariance.measure,
        "steps": cfg.invariance.steps,
        "train": list(train),
        "eval": list(evals),
        "values": values.tolist(),
        "row_mean": [finite_mean(v) for v in values],
        "column_mean": [finite_mean(v) for v in values.T],
        "held_out_accuracy": accuracy,
        "test_domain": cfg.data.test_domain,
        "test_accuracy": {t: row["test_accuracy"] for t, row in zip(train, rows)},
        "per_layer": {t: {e: row["cells"][e]["per_layer"] for e in evals} for t, row in zip(train, rows)},
        "layers": layers,
        "images": ids,
        "seed": cfg.seed,
    }
    paths["json"] = atomic_write_text(folder / "matrix.json", json.dumps(_plain(summary), indent=2) + "\n")
    return MatrixResult(folder, train, evals, values, accuracy, tuple(layers), paths)


def matrix_table(
    train: Sequence[str], evals: Sequence[str], values: np.ndarray, accuracy: dict[str, float]
) -> list[list[Any]]:
    """Header, one row per training augmentation (cells, mean, accuracy), then the column means."""
    header = ["train", *evals, "mean", "held_out_accuracy"]
    body = [[t, *v, finite_mean(v), accuracy[t]] for t, v in zip(train, values)]
    means = [
        "mean",
        *(finite_mean(c) for c in values.T),
        finite_mean(values.ravel()),
        finite_mean(accuracy.values()),
    ]
    return [header, *body, means]


def _fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, str):
        return value
    return "" if not math.isfinite(value) else f"{value:.{digits}g}"


def table_csv(table: list[list[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(table[0])
    writer.writerows([row[0], *(_fmt(v, 8) for v in row[1:])] for row in table[1:])
    return buffer.getvalue()


def table_markdown(table: list[list[Any]], measure: str) -> str:
    header, *rows = table
    lines = [
        f"{measure} (rows: training augmentation, columns: evaluation transformation)",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---", *["---:"] * (len(header) - 1)]) + "|",
    ]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def plot_matrix(
    path: Path, train: Sequence[str], evals: Sequence[str], values: np.ndarray, measure: str
) -> Path:
    """Heatmap, rows = training augmentation, columns = evaluation set, each cell annotated; the row
    means as a last column and the column means as a last row, set off by white lines.

    Drawn on a bare ``Figure`` (Agg canvas), not pyplot: no global backend or figure state is touched."""
    from matplotlib.figure import Figure

    grid = np.full((len(train) + 1, len(evals) + 1), np.nan)
    grid[:-1, :-1] = values
    grid[:-1, -1] = [finite_mean(v) for v in values]
    grid[-1, :-1] = [finite_mean(v) for v in values.T]
    grid[-1, -1] = finite_mean(values.ravel())
    fig = Figure(figsize=(1.6 + 0.9 * grid.shape[1], 1.2 + 0.55 * grid.shape[0]))
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis", aspect="auto")
    fig.colorbar(image, ax=ax, shrink=0.8, label=measure)
    finite = grid[np.isfinite(grid)]
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    for (i, j), v in np.ndenumerate(grid):
        text = _fmt(float(v), 3) or "n/a"
        ax.text(j, i, text, ha="center", va="center", fontsize=7, color="black" if v > middle else "white")
    ax.axhline(len(train) - 0.5, color="white", linewidth=2)
    ax.axvline(len(evals) - 0.5, color="white", linewidth=2)
    ax.set_xticks(range(grid.shape[1]), [*evals, "mean"], rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(grid.shape[0]), [*train, "mean"], fontsize=8)
    ax.set_xlabel("evaluation transformation")
    ax.set_ylabel("training augmentation")
    ax.set_title(f"invariance matrix: {measure}", fontsize=9)
    fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
