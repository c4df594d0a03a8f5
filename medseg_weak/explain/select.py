"""Choosing the CAM method, layer and threshold rule by metrics instead of by eye.

Candidates are scored on a small labelled subset (pseudo-mask Dice against the truth) or, without
labels, by faithfulness (how much of the classifier's confidence survives when the image is masked
by the CAM). No anchor tool offers this; the choice and its ranking are written next to the CAMs.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medseg_weak.config import CamConfig, Config, MaskRule
from medseg_weak.core.overlap import pseudo_mask_overlap
from medseg_weak.data.dataset import PreprocessedDataset
from medseg_weak.data.manifest import Manifest
from medseg_weak.data.prepare import open_cache
from medseg_weak.errors import InputError
from medseg_weak.explain.cams import FAST_METHODS, compute_cams
from medseg_weak.explain.generate import load_classifier, target_index
from medseg_weak.explain.masks import cam_to_mask
from medseg_weak.io_utils import atomic_write_text
from medseg_weak.rundir import RunDir

log = logging.getLogger(__name__)

CANDIDATE_RULES: tuple[MaskRule, ...] = (
    MaskRule(threshold="otsu"),
    MaskRule(threshold="mean"),
    MaskRule(threshold="percentile", value=50.0),
    MaskRule(threshold="percentile", value=70.0),
    MaskRule(threshold="max_fraction", value=0.3),
    MaskRule(threshold="max_fraction", value=0.5),
)
SELECT_IMAGES = 48


def select_cam_config(cfg: Config, manifest: Manifest, checkpoint: Path, out: Path) -> CamConfig:
    """Score method x layer x threshold-rule candidates; return the best CamConfig and record why."""
    module = load_classifier(checkpoint)
    model = module.model.eval()
    target = target_index(cfg.cams, module.labels)
    pool = [r for r in manifest.records if r.split == "val"] or list(manifest.records)
    labelled = [r for r in pool if r.mask_path][:SELECT_IMAGES]
    records = labelled or pool[:SELECT_IMAGES]
    if not records:
        raise InputError(manifest.source, "--select needs images (a 'val' split or any image)")
    cache = open_cache(cfg, RunDir(out.parent))
    dataset = PreprocessedDataset(manifest.subset(records), cfg.data.kind, cfg.data.image_size, cache)
    items = [dataset[i] for i in range(len(dataset))]
    images = torch.stack([it["image"] for it in items])
    regions = [it["region"].numpy() for it in items]
    truths = [it["mask"].numpy() > 0 for it in items] if labelled else None
    results = []
    for method, layer in itertools.product(sorted(FAST_METHODS), model.cam_layers()):
        cams = compute_cams(model, images, target_layer=layer, method=method, targets=target).cpu().numpy()
        cams = np.where(np.stack(regions), cams, 0.0)
        if truths is None:
            score = faithfulness(model, images, torch.from_numpy(cams).float(), target)
            results.append({"method": method, "layer": layer, "rule": cfg.cams.mask, "score": score})
            continue
        for rule in CANDIDATE_RULES:
            dice = [
                pseudo_mask_overlap(cam_to_mask(c, reg, rule), t)["dice"]
                for c, reg, t in zip(cams, regions, truths)
            ]
            results.append({"method": method, "layer": layer, "rule": rule, "score": float(np.mean(dice))})
    results.sort(key=lambda r: -r["score"])
    best = results[0]
    criterion = (
        "pseudo-mask dice" if truths is not None else "faithfulness (confidence kept on CAM-masked image)"
    )
    _write_selection(out, results, criterion, len(records))
    log.info(
        "--select: %s, layer %s, %s (%s %.3f)",
        best["method"],
        best["layer"],
        best["rule"].threshold,
        criterion,
        best["score"],
    )
    return dataclasses.replace(cfg.cams, method=best["method"], layer=best["layer"], mask=best["rule"])


def faithfulness(
    model: torch.nn.Module, images: torch.Tensor, cams: torch.Tensor, target: int | None
) -> float:
    """Mean target-class probability on ``image * cam`` relative to the plain image (higher: the CAM
    kept what the classifier needed), as pytorch-grad-cam's CamMultImageConfidenceChange measures."""
    with torch.no_grad():
        plain = model(images).softmax(1)
        kept = model(images * cams.unsqueeze(1)).softmax(1)
    idx = plain.argmax(1) if target is None else torch.full((len(images),), target)
    ratio = kept.gather(1, idx[:, None]) / plain.gather(1, idx[:, None]).clamp_min(1e-6)
    return float(ratio.mean())


def _write_selection(out: Path, results: list[dict[str, Any]], criterion: str, n: int) -> None:
    def describe(rule: MaskRule) -> str:
        return rule.threshold + (
            f":{rule.value:g}" if rule.threshold in ("fixed", "percentile", "max_fraction") else ""
        )

    lines = [
        f"CAM selection by {criterion} on {n} images",
        "",
        "| rank | method | layer | threshold | score |",
        "|---:|---|---|---|---:|",
    ]
    lines += [
        f"| {i} | {r['method']} | {r['layer']} | {describe(r['rule'])} | {r['score']:.4f} |"
        for i, r in enumerate(results[:30], start=1)
    ]
    atomic_write_text(out / "selection.md", "\n".join(lines) + "\n")
    best = results[0]
    atomic_write_text(
        out / "selection.json",
        json.dumps(
            {
                "criterion": criterion,
                "images": n,
                "method": best["method"],
                "layer": best["layer"],
                "mask": dataclasses.asdict(best["rule"]),
                "score": best["score"],
            },
            indent=2,
        )
        + "\n",
    )
