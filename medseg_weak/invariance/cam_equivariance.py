"""CAM equivariance: do a method's maps move with the input, and stay put under intensity changes?

One responsibility: for each CAM method and each transformation T, compare CAM(T x) with what it
should be: T(CAM(x)) for a spatial T (the evidence moved with the pixels), CAM(x) for an intensity T
(the evidence did not move). Agreement is the Pearson correlation of the maps and the Dice of the
masks that the same :class:`~medseg_weak.explain.masks.MaskRule` makes of both, each image counted
once. For a spatial T both are computed only where T(x) still shows the image (rotated-in corners
and shifted-in borders carry no evidence either way).

A method whose CAM(T x) correlates better with the *unmoved* CAM(x) than with T(CAM(x)) over the
spatial transformations is flagged (:meth:`CamEquivarianceResult.stays_put`): its maps sit where they
were while the image moved, so they say more about the method than about the input.

The CAM class of every view is the class of the untransformed image (predicted, or ``targets``), so
each comparison is between maps of the same class.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medseg_weak.core.overlap import overlap
from medseg_weak.errors import ConfigError
from medseg_weak.explain.cam_methods import CAM_METHODS
from medseg_weak.explain.cams import compute_cams, resolve_target_layer
from medseg_weak.explain.masks import MaskRule, cam_to_mask
from medseg_weak.invariance.activations import SampleSource, eval_mode, model_device
from medseg_weak.invariance.api import Transforms, as_transformations
from medseg_weak.invariance.transforms import Transformation, check_transformations
from medseg_weak.io_utils import atomic_write_text

__all__ = ["CamAgreement", "CamEquivarianceResult", "cam_equivariance", "pearson"]


@dataclass(frozen=True)
class CamAgreement:
    """Mean agreement of one method under one transformation. ``*_unmoved``: CAM(T x) vs CAM(x), for
    spatial transformations (NaN for intensity ones, where it is the main comparison already)."""

    method: str
    transformation: str
    param: float
    spatial: bool
    is_identity: bool
    pearson: float
    dice: float
    pearson_unmoved: float
    dice_unmoved: float
    n_images: int


@dataclass(frozen=True)
class CamEquivarianceResult:
    rows: list[CamAgreement]

    def stays_put(self) -> dict[str, bool]:
        """Per method: True when, over the spatial non-identity transformations, CAM(T x) agrees
        better with the unmoved CAM(x) than with T(CAM(x)) (mean Pearson). False without such rows."""
        flags: dict[str, bool] = {}
        for method in dict.fromkeys(r.method for r in self.rows):
            moved = [r for r in self.rows if r.method == method and r.spatial and not r.is_identity]
            if not moved:
                flags[method] = False
                continue
            follows = np.nanmean([r.pearson for r in moved])
            stays = np.nanmean([r.pearson_unmoved for r in moved])
            flags[method] = bool(stays > follows)
        return flags

    def to_rows(self) -> list[dict[str, Any]]:
        flags = self.stays_put()
        return [{**asdict(r), "stays_put": flags[r.method]} for r in self.rows]

    def to_csv(self, path: str | Path) -> Path:
        rows = self.to_rows()
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["method"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return atomic_write_text(Path(path), buffer.getvalue())


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two maps' values; NaN when either is constant (no pattern to compare)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    a, b = a - a.mean(), b - b.mean()
    den = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else math.nan


def cam_equivariance(
    model: nn.Module,
    images: torch.Tensor | Any,
    transforms: Transforms,
    methods: Sequence[str] = ("gradcam",),
    target_layer: nn.Module | str | None = None,
    targets: int | None = None,
    rule: MaskRule | None = None,
    batch_size: int = 32,
) -> CamEquivarianceResult:
    """Agreement of CAM(T x) with T(CAM(x)) (spatial T) or CAM(x) (intensity T), per method and T.

    ``images``: a tensor ``[N, C, H, W]`` or a dataset (as :func:`measure_invariance`). ``targets``:
    one class for every image (e.g. the densest class), or None for each image's predicted class.
    ``rule``: how both maps become masks for the Dice (default: Otsu, as the pseudo-masks).
    """
    rule = MaskRule() if rule is None else rule
    if isinstance(methods, str):
        methods = [methods]
    for method in methods:
        CAM_METHODS.get(method)
    if not methods:
        raise ConfigError(f"'methods' is empty. Valid: {', '.join(CAM_METHODS.names())}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"'batch_size' must be an integer >= 1; got {batch_size!r}")
    ts = as_transformations(transforms)
    source = SampleSource(images)
    if len(source) < 1:
        raise ConfigError("'images' is empty")
    device = model_device(model)
    check_transformations(ts, source.batch([0]).to(device))
    layer = resolve_target_layer(model, target_layer) if target_layer is not None else None
    identity_params = {t.label: _is_identity(t, transforms) for t in ts}

    scores: dict[tuple[str, int], list[list[float]]] = {(m, i): [] for m in methods for i in range(len(ts))}
    for start in range(0, len(source), batch_size):
        x = source.batch(range(start, min(start + batch_size, len(source)))).to(device)
        ids = _class_ids(model, x, targets)
        for method in methods:
            base = compute_cams(model, x, layer, method, ids, batch_size)
            for i, t in enumerate(ts):
                cams = compute_cams(model, t(x), layer, method, ids, batch_size)
                scores[(method, i)].extend(_compare(t, base, cams, rule))

    rows = []
    for (method, i), per_image in scores.items():
        values = np.asarray(per_image, dtype=np.float64)
        means = [
            float(np.nanmean(values[:, k])) if np.isfinite(values[:, k]).any() else math.nan for k in range(4)
        ]
        t = ts[i]
        rows.append(
            CamAgreement(method, t.label, t.param, t.spatial, identity_params[t.label], *means, len(values))
        )
    return CamEquivarianceResult(rows)


def _is_identity(t: Transformation, transforms: Transforms) -> bool:
    identity = getattr(transforms, "identity_param", None)
    return identity is not None and t.param == identity


def _class_ids(model: nn.Module, x: torch.Tensor, targets: int | None) -> torch.Tensor:
    if targets is not None:
        return torch.full((x.shape[0],), int(targets), dtype=torch.long)
    with eval_mode(model), torch.no_grad():
        return model(x).argmax(dim=1).cpu()


def _compare(t: Transformation, base: torch.Tensor, cams: torch.Tensor, rule: MaskRule) -> list[list[float]]:
    """Per image: [pearson, dice] against the expected map, then [pearson, dice] against the unmoved one."""
    if t.spatial:
        expected = t.on_map(base[:, None])[:, 0]
        valid = t.on_map(torch.ones_like(base[:, None]))[:, 0] > 0.5
    else:
        expected, valid = base, torch.ones_like(base, dtype=torch.bool)
    out = []
    for cam, exp, unmoved, region in zip(
        cams.cpu().numpy(), expected.cpu().numpy(), base.cpu().numpy(), valid.cpu().numpy(), strict=True
    ):
        row = list(_agreement(cam, exp, region, rule))
        row += list(_agreement(cam, unmoved, region, rule)) if t.spatial else [math.nan, math.nan]
        out.append(row)
    return out


def _agreement(
    cam: np.ndarray, reference: np.ndarray, region: np.ndarray, rule: MaskRule
) -> tuple[float, float]:
    masks = [cam_to_mask(m, region, rule) == 1 for m in (cam, reference)]
    return pearson(cam[region], reference[region]), overlap(masks[0], masks[1], region)["dice"]
