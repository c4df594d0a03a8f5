"""``interpret_classifier``: every interpretability metric of every CAM method for one classifier.

One responsibility: orchestrate. CAMs come from :func:`medseg_weak.explain.compute_cams` (the
classifier contract: ``cam_layer`` / ``cam_layers()`` and the fast path); each method and each
baseline map then goes through the same metrics (faithfulness, ROAD, localisation where masks or
regions exist) and the CAM methods through the sanity checks. Maps explain one class per image, by
default the predicted class (the decision the user wants explained); the same class is used for the
baselines and for every randomised model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

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
from medseg_weak.interpret.sanity import (
    RandomisationResult,
    cam_explainer,
    cascading_randomisation,
    data_randomisation,
)
from medseg_weak.interpret.scores import Score, check_score, model_device, predicted_classes
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
    batch_size: int = 64,
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
    images included; on a CPU 32-64 was fastest for tiny_cnn at 96 px, larger batches fall out of
    cache; on a GPU raise it). ``road_percentiles=()`` skips ROAD. ``random_label_model`` adds the
    data-randomisation test.
    """
    _check_inputs(images, labels, masks, regions, domains, ids)
    for name in methods:
        CAM_METHODS.get(name)  # every name checked before anything runs
    REPLACEMENTS.get(replacement)
    check_score(score)
    options = Options(
        tuple(methods),
        steps,
        batch_size,
        target_layer,
        replacement,
        score,
        tuple(road_percentiles),
        sanity,
        seed,
    )
    models = [model] if random_label_model is None else [model, random_label_model]
    with _eval_mode(*models):
        for m in models:
            _check_model_takes(m, images)
        ids_t = _targets(model, images, targets, batch_size)
        masks_np = None if masks is None else np.asarray(masks).astype(bool)
        regions_np = None if regions is None else np.asarray(regions).astype(bool)
        scored, sanity_results, data_results = _measure(
            model, images, ids_t, masks_np, regions_np, random_label_model, options, progress
        )
    n = images.shape[0]
    return InterpretResult(
        ids=tuple(ids) if ids is not None else tuple(str(i) for i in range(n)),
        labels=tuple(str(v) for v in labels),
        domains=tuple(domains) if domains is not None else ("all",) * n,
        targets=ids_t.numpy(),
        images=images.detach().float().cpu().numpy(),
        masks=masks_np,
        regions=regions_np,
        steps=steps,
        road_percentiles=options.road_percentiles,
        methods=scored,
        sanity=sanity_results,
        data_randomisation=data_results,
        settings={"replacement": replacement, "score": score, "target_layer": target_layer, "seed": seed},
    )


@dataclass(frozen=True)
class Options:
    """The run's settings, as ``interpret_classifier`` received them."""

    methods: tuple[str, ...]
    steps: int
    batch_size: int
    target_layer: str | None
    replacement: str
    score: Score
    road_percentiles: tuple[float, ...]
    sanity: bool
    seed: int


@contextmanager
def _eval_mode(*models: nn.Module) -> Iterator[None]:
    """Eval mode for the run (BatchNorm running statistics, no dropout); every submodule's own flag
    restored afterwards, so the caller gets its model back as it gave it."""
    flags = [(m, m.training) for model in models for m in model.modules()]
    try:
        for model in models:
            model.eval()
        yield
    finally:
        for module, flag in flags:
            module.training = flag


def _measure(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    masks: np.ndarray | None,
    regions: np.ndarray | None,
    random_label_model: nn.Module | None,
    opt: Options,
    progress: bool,
) -> tuple[dict[str, MethodScores], dict[str, RandomisationResult], dict[str, RandomisationResult]]:
    n, size = images.shape[0], (images.shape[-2], images.shape[-1])
    regions_t = None if regions is None else torch.from_numpy(regions)
    maps: dict[str, tuple[torch.Tensor, bool]] = {}
    for name in opt.methods:
        maps[name] = (_cams(model, images, name, targets, opt.target_layer, opt.batch_size), False)
    for name in BASELINES:
        maps[name] = (BASELINES.get(name)(n, size, regions_t, opt.seed).to(images.device), True)

    scored: dict[str, MethodScores] = {}
    sanity_results: dict[str, RandomisationResult] = {}
    data_results: dict[str, RandomisationResult] = {}
    with progress_bar(
        len(maps) + (len(opt.methods) if opt.sanity else 0), "interpret", enabled=progress
    ) as advance:
        for name, (m, is_baseline) in maps.items():
            scored[name] = _score(model, images, m, targets, name, is_baseline, masks, regions, opt)
            advance(1)
        random_auc = scored["random"].metric("deletion_auc")
        for name in [m for m in scored if m != "random"]:
            flagged = no_better_than_random(scored[name].metric("deletion_auc"), random_auc)
            scored[name] = dataclasses.replace(scored[name], flagged=flagged)
        for name in opt.methods if opt.sanity else ():
            explain = cam_explainer(name, opt.target_layer, opt.batch_size)
            sanity_results[name] = cascading_randomisation(
                model, images, targets, explain, name, opt.seed, original=maps[name][0]
            )
            if random_label_model is not None:
                data_results[name] = data_randomisation(
                    model, random_label_model, images, targets, explain, name
                )
            advance(1)
    return scored, sanity_results, data_results


def _score(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    targets: torch.Tensor,
    name: str,
    baseline: bool,
    masks: np.ndarray | None,
    regions: np.ndarray | None,
    opt: Options,
) -> MethodScores:
    common = dict(targets=targets, score=opt.score, batch_size=opt.batch_size)
    curve = dict(steps=opt.steps, replacement=opt.replacement, **common)
    deletion = perturbation_curves(model, images, maps, mode="deletion", **curve)
    insertion = perturbation_curves(model, images, maps, mode="insertion", **curve)
    if opt.road_percentiles:
        morf = road_scores(model, images, maps, order="morf", percentiles=opt.road_percentiles, **common)
        lerf = road_scores(model, images, maps, order="lerf", percentiles=opt.road_percentiles, **common)
    else:  # ROAD switched off (its imputation is the report's most expensive part on a CPU)
        morf = lerf = torch.full((images.shape[0], 1), float("nan"))
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
    except (MedsegError, RuntimeError, ValueError, TypeError, IndexError) as err:
        raise ConfigError(f"CAM method '{method}' cannot run on '{type(model).__name__}': {err}") from err


def _check_model_takes(model: nn.Module, images: torch.Tensor) -> None:
    """One image through the model first, so a wrong channel count (a greyscale image for a colour
    model) or size is one clear error, not a traceback from deep inside the first metric."""
    try:
        with torch.no_grad():
            model(images[:1].to(model_device(model)).float())
    except RuntimeError as err:
        raise ConfigError(
            f"'{type(model).__name__}' cannot take images of shape {tuple(images.shape[1:])} "
            f"(channels, height, width): {err}"
        ) from err


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
