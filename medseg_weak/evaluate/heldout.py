"""`medseg-weak evaluate`: on the test images, CAM pseudo-masks vs UNet on CAMs vs UNet on the truth.

This table answers the method's central question: does a segmenter trained on CAM pseudo-masks beat
the pseudo-masks themselves, and how far is it from a segmenter trained on real masks (the oracle)?
Scores are computed in the model's geometry (the preprocessed, canonically flipped image), per image,
then aggregated per hospital and per density class (mean ± SE), with the worst and best cases by id.
The segmenters run in Lightning's predict loop, so DDP ranks score disjoint images; rank 0 gathers
the rows and writes the tables.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader

from medseg_weak.config import Config
from medseg_weak.core.predict_loop import gather_to_rank_zero, predict_trainer
from medseg_weak.data.manifest import Manifest, Record
from medseg_weak.errors import InputError
from medseg_weak.evaluate.metrics import segmentation_metrics
from medseg_weak.io_utils import atomic_write_text
from medseg_weak.rundir import RunDir
from medseg_weak.segment.module import SegmenterModule
from medseg_weak.segment.train import split_dataset
from medseg_weak.tables import Table

METRICS = ("dice", "iou", "hd95")  # tabled; per_image.csv also holds ASSD
SCORES = (*METRICS, "assd")


def evaluate_heldout(
    cfg: Config, manifest: Manifest, run: RunDir, checkpoints: dict[str, Path], out: Path
) -> list[dict[str, Any]]:
    """Score every test image with the CAM pseudo-masks and each segmenter of ``checkpoints``
    ({method name: checkpoint}) through Lightning's predict loop on ``eval.accelerator`` /
    ``eval.devices`` / ``eval.strategy``; write the tables into ``out``; return the rows."""
    data = split_dataset(cfg, manifest, run, "test", "cams")
    if any(r.mask_path == "" for r in data.base.records):
        raise InputError(manifest.source, "evaluate needs ground-truth masks (mask_path) for the test images")
    models = {
        name: SegmenterModule.load_from_checkpoint(path, map_location="cpu", weights_only=False).eval()
        for name, path in checkpoints.items()
    }
    e = cfg.eval
    scorer = HeldoutScorer(models, data.base.records, out, list(manifest.labels), _scope(cfg))
    loader = DataLoader(data, batch_size=e.batch_size, num_workers=cfg.data.num_workers)
    trainer = predict_trainer(e, default_root_dir=out)
    trainer.predict(scorer, loader, return_predictions=False)
    trainer.strategy.barrier("evaluation written")
    return read_per_image(out / "per_image.csv")


class HeldoutScorer(L.LightningModule):
    """``predict_step``: one batch of test images scored by every method; at the end of the loop the
    ranks' rows are gathered on rank 0, put back in data set order, and tabled there."""

    def __init__(
        self, models: dict[str, nn.Module], records: list[Record], out: Path, labels: list[str], scope: str
    ) -> None:
        super().__init__()
        self.segmenters = nn.ModuleDict(models)  # a ModuleDict, so that the loop moves them to the device
        self.records = records
        self.out = out
        self.labels = labels
        self.scope = scope
        self.scored: list[tuple[int, list[dict[str, Any]]]] = []  # (position, rows), this rank's images

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> int:
        images = batch["image"]
        probs = {name: torch.sigmoid(model(images))[:, 0].cpu() for name, model in self.segmenters.items()}
        for k, position in enumerate(batch["index"].tolist()):
            record = self.records[position]
            region = batch["region"][k].cpu().numpy()
            truth = batch["mask"][k].cpu().numpy() > 0
            preds = {"cam": batch["target"][k].cpu().numpy() == 1}
            preds.update({name: (p[k].numpy() >= 0.5) & region for name, p in probs.items()})
            rows = [
                {"id": record.id, "domain": record.domain, "label": record.label, "method": method}
                | segmentation_metrics(pred, truth)
                for method, pred in preds.items()
            ]
            self.scored.append((position, rows))
        return len(batch["index"])

    def on_predict_end(self) -> None:
        gathered = gather_to_rank_zero(self.scored)
        if gathered is None:
            return
        scored = sorted((item for rank in gathered for item in rank), key=lambda item: item[0])
        write_tables([row for _, rows in scored for row in rows], self.out, self.labels, scope=self.scope)


def _scope(cfg: Config) -> str:
    held_out = cfg.data.test_domain
    return f"held-out hospital {held_out}" if held_out else "test images of the training hospitals"


def evaluate_folds(run: RunDir, domains: list[str], labels: list[str], out: Path) -> list[dict[str, Any]]:
    """Pool the leave-one-out folds' held-out scores: columns become the held-out hospitals."""
    paths = {d: run.fold(d).stage("eval") / "per_image.csv" for d in domains}
    missing = [d for d, p in paths.items() if not p.is_file()]
    if missing:
        raise InputError(
            run.root / "folds",
            f"no evaluation for held-out {', '.join(missing)}; rerun the leave-one-out pipeline to finish",
        )
    rows = [row for d in domains for row in read_per_image(paths[d]) if row["domain"] == d]
    write_tables(rows, out, labels, scope="leave-one-out: each column's hospital held out")
    return rows


def read_per_image(path: Path) -> list[dict[str, Any]]:
    with path.open(newline="") as f:
        return [{**r, **{m: float(r[m]) for m in SCORES}} for r in csv.DictReader(f)]


def write_tables(
    rows: list[dict[str, Any]], out: Path, labels: list[str] | None = None, scope: str = "test images"
) -> None:
    """Per-image scores -> tables (rows = method; columns = hospital or class, plus all images)."""
    out.mkdir(parents=True, exist_ok=True)

    def table(title: str, key: str, metric: str, order: list[str]) -> Table:
        values = [(r["method"], group, r[metric]) for group in order for r in rows if r[key] == group]
        values += [(r["method"], "all", r[metric]) for r in rows]
        # Images are not paired across columns, so no per-row "average" column: "all" pools the images.
        return Table.from_values(f"{title} ({scope})", values, average_column=None)

    hospitals = sorted({r["domain"] for r in rows})
    for metric in METRICS:
        t = table(f"{metric} by hospital", "domain", metric, hospitals)
        t.write(out, f"{metric}_by_hospital", plot=metric == "dice")
    classes = [
        c for c in (labels or sorted({r["label"] for r in rows})) if any(r["label"] == c for r in rows)
    ]
    for metric in METRICS:
        t = table(f"{metric} by density class", "label", metric, classes)
        t.write(out, f"{metric}_by_class", plot=metric == "dice")
    unet = [r for r in rows if r["method"] == "unet_cam"] or [r for r in rows if r["method"] == "cam"]
    ranked = sorted(unet, key=lambda r: r["dice"])
    cases = {
        "method": ranked[0]["method"] if ranked else None,
        "worst": [(r["id"], round(r["dice"], 4)) for r in ranked[:5]],
        "best": [(r["id"], round(r["dice"], 4)) for r in ranked[-5:][::-1]],
    }
    atomic_write_text(out / "cases.json", json.dumps(cases, indent=2) + "\n")
    lines = [",".join(("id", "domain", "label", "method", *SCORES))]
    lines += [
        ",".join([r["id"], r["domain"], r["label"], r["method"], *(f"{r[m]:.6g}" for m in SCORES)])
        for r in rows
    ]
    atomic_write_text(out / "per_image.csv", "\n".join(lines) + "\n")


def summary_markdown(out: Path) -> str:
    parts = [
        (out / f"{name}.md").read_text() for name in ("dice_by_hospital", "hd95_by_hospital", "dice_by_class")
    ]
    return "\n".join(parts)
