"""``interpret_classifier``: every interpretability metric of every CAM method for one classifier.

One responsibility: orchestrate. CAMs come from :func:`medseg_weak.explain.compute_cams` (the
classifier contract: ``cam_layer`` / ``cam_layers()`` and the fast path); each method and each
baseline map then goes through the same metrics (faithfulness, ROAD, localisation where masks or
regions exist) and the CAM methods through the sanity checks. Maps explain one class per image, by
default the predicted class (the decision the user wants explained); the same class is used for the
baselines and for every randomised model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from medseg_weak.core.overlap import energy_outside, saliency_scores
from medseg_weak.errors import ConfigError, MedsegError
from medseg_weak.explain.cam_methods import CAM_METHODS
from medseg_weak.interpret.baselines import BASELINES, no_better_than_random
from medseg_weak.interpret.faithfulness import (
    REPLACEMENTS,
    confidence_change,
    curve_area,
    perturbation_curves,
)
from medseg_weak.interpret.results import InterpretResult, MethodScores
from medseg_weak.interpret.road import DEFAULT_PERCENTILES, road_scores
from medseg_weak.interpret.sanity import cam_explainer, cascading_randomisation, data_randomisation
from medseg_weak.interpret.scores import Score, check_score, predicted_classes
from medseg_weak.progress import progress_bar

DEFAULT_METHODS: tuple[str, ...] = ("gradcam", "gradcam++", "xgradcam", "layercam", "hirescam")


def interpret_classifier(
    model: nn.Module,
    images: torch.Tensor,
    labels: Sequence[str | int],
    masks: torch.Tensor | np.ndarray | None = None,
    regions: torch.Tensor | np.ndarray | None = None,
    domains: Sequence[str] | None = None,
    methods: Sequence[str] = DEFAULT_METHODS,
    steps: int = 20,
    batch_size: int = 256,
    targets: int | Sequence[int] | None = None,
    ids: Sequence[str] | None = None,
    target_layer: str | None = None,
    replacement: str = "blur",
    score: Score = "probability",
    road_percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    sanity: bool = True,
    random_label_model: nn.Module | None = None,
    seed: int = 0,
    progress: bool = False,
) -> InterpretResult:
    """Faithfulness, localisation and sanity checks of ``methods`` on ``images`` ``[N, C, H, W]``.

    ``masks`` ``[N, H, W]`` (degradation / dense tissue; an all-zero mask = none for that image) give
    pointing game, relevance mass and rank; ``regions`` (field of view / breast) give the share of
    map energy outside them. ``targets``: None = predicted class, an int = that class for every
    image, a sequence = one per image. ``batch_size`` bounds the images per forward (perturbed
    images included). ``random_label_model`` adds the data-randomisation test.
    """
    n = _check_inputs(images, labels, masks, regions, domains, ids)
    for name in methods:
        CAM_METHODS.get(name)  # every name checked before anything runs
    REPLACEMENTS.get(replacement)
    check_score(score)
    model = model.eval()
    size = (images.shape[-2], images.shape[-1])
    ids_t = _targets(model, images, targets, batch_size)
    masks_np = None if masks is None else np.asarray(masks).astype(bool)
    regions_np = None if regions is None else np.asarray(regions).astype(bool)
    regions_t = None if regions_np is None else torch.from_numpy(regions_np)

    maps: dict[str, tuple[torch.Tensor, bool]] = {}
    for name in methods:
        maps[name] = (_cams(model, images, name, ids_t, target_layer, batch_size), False)
    for name in BASELINES:
        maps[name] = (BASELINES.get(name)(n, size, regions_t, seed).to(images.device), True)

    scored: dict[str, MethodScores] = {}
    sanity_results, data_results = {}, {}
    work = len(maps) + (len(methods) if sanity else 0)
    with progress_bar(work, "interpret", enabled=progress) as advance:
        for name, (m, is_baseline) in maps.items():
            scored[name] = _score(
                model,
                images,
                m,
                ids_t,
                is_baseline,
                name,
                masks_np,
                regions_np,
                steps,
                replacement,
                score,
                road_percentiles,
                batch_size,
            )
            advance(1)
        random_auc = scored["random"].metric("deletion_auc")
        for name in methods:
            flagged = no_better_than_random(scored[name].metric("deletion_auc"), random_auc)
            scored[name] = _with_flag(scored[name], flagged)
        scored["centre"] = _with_flag(
            scored["centre"], no_better_than_random(scored["centre"].metric("deletion_auc"), random_auc)
        )
        for name in methods if sanity else ():
            explain = cam_explainer(name, target_layer, batch_size)
            sanity_results[name] = cascading_randomisation(model, images, ids_t, explain, name, seed)
            if random_label_model is not None:
                data_results[name] = data_randomisation(
                    model, random_label_model.eval(), images, ids_t, explain, name
                )
            advance(1)
    return InterpretResult(
        ids=tuple(ids) if ids is not None else tuple(str(i) for i in range(n)),
        labels=tuple(str(v) for v in labels),
        domains=tuple(domains) if domains is not None else ("all",) * n,
        targets=ids_t.numpy(),
        images=images.detach().float().cpu().numpy(),
        masks=masks_np,
        regions=regions_np,
        steps=steps,
        road_percentiles=tuple(road_percentiles),
        methods=scored,
        sanity=sanity_results,
        data_randomisation=data_results,
        settings={"replacement": replacement, "score": score, "target_layer": target_layer, "seed": seed},
    )


def _score(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    targets: torch.Tensor,
    baseline: bool,
    name: str,
    masks: np.ndarray | None,
    regions: np.ndarray | None,
    steps: int,
    replacement: str,
    score: Score,
    percentiles: Sequence[float],
    batch_size: int,
) -> MethodScores:
    common = dict(targets=targets, score=score, batch_size=batch_size)
    deletion = perturbation_curves(
        model, images, maps, mode="deletion", steps=steps, replacement=replacement, **common
    )
    insertion = perturbation_curves(
        model, images, maps, mode="insertion", steps=steps, replacement=replacement, **common
    )
    morf = road_scores(model, images, maps, order="morf", percentiles=percentiles, **common)
    lerf = road_scores(model, images, maps, order="lerf", percentiles=percentiles, **common)
    change = confidence_change(model, images, maps, **common)
    maps_np = maps.detach().float().cpu().numpy()
    n = maps_np.shape[0]
    local = {k: np.full(n, np.nan) for k in ("pointing", "relevance_mass", "relevance_rank")}
    if masks is not None:
        for i in range(n):
            for k, v in saliency_scores(maps_np[i], masks[i]).items():
                local[k][i] = v
    outside = np.full(n, np.nan)
    if regions is not None:
        outside = np.array([energy_outside(maps_np[i], regions[i]) for i in range(n)])
    values = {
        "deletion_auc": curve_area(deletion).cpu().numpy(),
        "insertion_auc": curve_area(insertion).cpu().numpy(),
        "road_morf": morf.mean(dim=1).cpu().numpy(),
        "road_lerf": lerf.mean(dim=1).cpu().numpy(),
        "confidence_change": change.cpu().numpy(),
        **local,
        "energy_outside": outside,
    }
    return MethodScores(
        method=name,
        baseline=baseline,
        maps=maps_np,
        deletion_curve=deletion.cpu().numpy(),
        insertion_curve=insertion.cpu().numpy(),
        road_morf_curve=morf.cpu().numpy(),
        road_lerf_curve=lerf.cpu().numpy(),
        values=values,
        flagged=False,
    )


def _with_flag(scores: MethodScores, flagged: bool) -> MethodScores:
    import dataclasses

    return dataclasses.replace(scores, flagged=flagged)


def _cams(
    model: nn.Module,
    images: torch.Tensor,
    method: str,
    targets: torch.Tensor,
    target_layer: str | None,
    batch_size: int,
) -> torch.Tensor:
    from medseg_weak.explain.cams import compute_cams

    try:
        return compute_cams(
            model, images, target_layer=target_layer, method=method, targets=targets, batch_size=batch_size
        )
    except MedsegError:
        raise
    except (RuntimeError, ValueError, TypeError, IndexError) as err:
        raise ConfigError(f"CAM method '{method}' cannot run on '{type(model).__name__}': {err}") from err


def _targets(
    model: nn.Module, images: torch.Tensor, targets: int | Sequence[int] | None, batch_size: int
) -> torch.Tensor:
    n = images.shape[0]
    if targets is None:
        return predicted_classes(model, images, batch_size)
    if isinstance(targets, int):
        return torch.full((n,), targets, dtype=torch.long)
    ids = torch.as_tensor(list(targets), dtype=torch.long)
    if ids.shape != (n,):
        raise ConfigError(f"'targets' has {ids.numel()} classes for {n} images")
    return ids


def _check_inputs(
    images: torch.Tensor,
    labels: Sequence[str | int],
    masks: torch.Tensor | np.ndarray | None,
    regions: torch.Tensor | np.ndarray | None,
    domains: Sequence[str] | None,
    ids: Sequence[str] | None,
) -> int:
    if images.ndim != 4:
        raise ValueError(f"images must be [N, C, H, W]; got shape {tuple(images.shape)}")
    n = images.shape[0]
    if n == 0:
        raise ValueError("interpret_classifier needs at least one image")
    for name, seq in (("labels", labels), ("domains", domains), ("ids", ids)):
        if seq is not None and len(seq) != n:
            raise ValueError(f"'{name}' has {len(seq)} entries for {n} images")
    for name, arr in (("masks", masks), ("regions", regions)):
        if arr is not None and tuple(arr.shape) != (n, *images.shape[-2:]):
            raise ValueError(
                f"'{name}' must be [N, H, W] = {(n, *images.shape[-2:])}; got {tuple(arr.shape)}"
            )
    return n
