"""measure_invariance: every requested measure of every named layer in one streaming pass.

One responsibility: validate everything that can be wrong *before* the first forward pass of the
measurement (layer names, sample count, transformations that change the image size or reject the
images, measures that need spatial transformations or feature maps), then run the N x T forwards
batched on the model's device, feeding :class:`~medseg_weak.invariance.streaming.MatrixAccumulator`s.

Cost: N x T forwards, each batch = up to ``batch_size`` samples under one transformation, plus one
single-image probe forward that learns the layers' activation shapes. Memory: for each layer, float64
statistics the size of ``2 batch_size + 2 T + 1`` activations (twice that with a same-equivariance
measure), independent of N.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from medseg_weak.errors import ConfigError
from medseg_weak.invariance.activations import LayerTap, SampleSource, eval_mode, model_device, resolve_layers
from medseg_weak.invariance.measures import MEASURES, Measure, average_feature_maps
from medseg_weak.invariance.result import ALL, InvarianceResult
from medseg_weak.invariance.streaming import LayerStats, MatrixAccumulator
from medseg_weak.invariance.transforms import Transformation, check_transformations
from medseg_weak.progress import progress_bar

__all__ = ["as_transformations", "measure_invariance", "measure_invariances"]

# which activations feed a set of accumulators: f(T x), or T^-1 f(T x) for same-equivariance
INVARIANCE, SAME_EQUIVARIANCE = "invariance", "same_equivariance"
Transforms = Sequence[Transformation] | Sequence[Callable[[torch.Tensor], torch.Tensor]]


def measure_invariance(
    model: nn.Module,
    images: torch.Tensor | Any,
    transforms: Transforms,
    layers: Sequence[str],
    measure: str = "normalized_variance",
    batch_size: int = 64,
    average_feature_maps: bool = True,
    groups: Sequence[str] | None = None,
    progress: bool = False,
) -> InvarianceResult:
    """One measure (a name in :data:`~medseg_weak.invariance.measures.MEASURES`) of ``layers``.

    ``images``: a tensor ``[N, C, H, W]`` or a map-style dataset (items: tensors, dicts with "image",
    or tuples). ``transforms``: a :class:`~medseg_weak.invariance.transforms.TransformationSet` or any
    sequence of callables on batches. ``layers``: names as in ``model.named_modules()`` (ViT: blocks
    give token activations). ``groups``: one label per sample (e.g. hospital); the result then holds
    ``result.groups[label]`` too, and the pooled values are merged exactly from the groups' statistics.
    """
    return measure_invariances(
        model, images, transforms, layers, (measure,), batch_size, average_feature_maps, groups, progress
    )[measure]


def measure_invariances(
    model: nn.Module,
    images: torch.Tensor | Any,
    transforms: Transforms,
    layers: Sequence[str],
    measures: Sequence[str] = ("transformation_variance", "sample_variance", "normalized_variance"),
    batch_size: int = 64,
    average_feature_maps: bool = True,
    groups: Sequence[str] | None = None,
    progress: bool = False,
) -> dict[str, InvarianceResult]:
    """Several measures from the same single pass: ``{measure: InvarianceResult}``."""
    specs = [MEASURES.get(name) for name in measures]
    if not specs:
        raise ConfigError(f"'measures' is empty. Valid: {', '.join(MEASURES.names())}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"'batch_size' must be an integer >= 1; got {batch_size!r}")
    ts = as_transformations(transforms)
    same_eq = any(spec.same_equivariance for spec in specs)
    if same_eq:
        flat = [t.label for t in ts if not t.spatial]
        if flat:
            raise ConfigError(
                f"same-equivariance measures need spatial transformations (rotation, scale, translation, "
                f"perspective); not spatial: {', '.join(flat[:5])}. Use an invariance measure for those"
            )
    source = SampleSource(images)
    members = _group_members(len(source), groups)
    taps = resolve_layers(model, layers)
    device = model_device(model)

    with eval_mode(model), torch.no_grad(), LayerTap(taps) as tap:
        shapes = _probe(model, tap, source, ts, device, same_eq)
        kinds = (INVARIANCE, SAME_EQUIVARIANCE) if same_eq else (INVARIANCE,)
        stats: dict[str, dict[str, dict[str, LayerStats]]] = {}
        total = len(source) * len(ts)
        with progress_bar(total, "invariance", enabled=progress) as advance:
            for label, indices in members.items():
                accs = {
                    kind: {name: MatrixAccumulator(shapes[name], len(ts), device) for name in taps}
                    for kind in kinds
                }
                for start in range(0, len(indices), batch_size):
                    chunk = indices[start : start + batch_size]
                    _run_chunk(model, tap, source.batch(chunk).to(device), ts, accs)
                    advance(len(chunk) * len(ts))
                stats[label] = {
                    kind: {n: acc.stats() for n, acc in by_layer.items()} for kind, by_layer in accs.items()
                }

    return {spec.name: _result(spec, stats, ts, average_feature_maps) for spec in specs}


def as_transformations(transforms: Transforms) -> list[Transformation]:
    """A transformation set's members as they are; plain callables as non-spatial ``t<i>`` members."""
    items = list(transforms)
    if len(items) < 2:
        raise ConfigError(
            "the measures need at least 2 transformations (std over transformations, n - 1); "
            f"got {len(items)}"
        )
    out = []
    for i, t in enumerate(items):
        if isinstance(t, Transformation):
            out.append(t)
        elif callable(t):
            out.append(Transformation(getattr(t, "__name__", "t"), float(i), _call_plain(t), spatial=False))
        else:
            raise ConfigError(f"transformation {i} is not callable: {t!r}")
    return out


def _call_plain(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor, float], torch.Tensor]:
    return lambda images, param: fn(images)


def _group_members(n: int, groups: Sequence[str] | None) -> dict[str, list[int]]:
    if n < 2:
        raise ConfigError(f"the measures need at least 2 samples (std over samples, n - 1); got {n}")
    if groups is None:
        return {ALL: list(range(n))}
    labels = [str(g) for g in groups]
    if len(labels) != n:
        raise ConfigError(f"'groups' has {len(labels)} labels for {n} samples")
    members: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        members.setdefault(label, []).append(i)
    small = [f"'{g}' ({len(idx)})" for g, idx in members.items() if len(idx) < 2]
    if small:
        raise ConfigError(f"every group needs at least 2 samples; too few: {', '.join(small)}")
    return members


def _probe(
    model: nn.Module,
    tap: LayerTap,
    source: SampleSource,
    ts: list[Transformation],
    device: torch.device,
    same_eq: bool,
) -> dict[str, tuple[int, ...]]:
    """Apply every transformation to one sample, then one forward: clear errors before the real pass."""
    x = source.batch([0]).to(device)
    check_transformations(ts, x)
    outputs = tap.run(model, x)
    if same_eq:
        flat = {n: tuple(a.shape) for n, a in outputs.items() if a.ndim != 4}
        if flat:
            raise ConfigError(
                f"same-equivariance needs feature maps [B, C, h, w] to transform; not maps: layer(s) {flat}"
            )
    return {name: tuple(a.shape[1:]) for name, a in outputs.items()}


def _run_chunk(
    model: nn.Module,
    tap: LayerTap,
    x: torch.Tensor,
    ts: list[Transformation],
    accs: dict[str, dict[str, MatrixAccumulator]],
) -> None:
    for by_layer in accs.values():
        for acc in by_layer.values():
            acc.start_chunk(x.shape[0])
    for i, t in enumerate(ts):
        outputs = tap.run(model, t(x))
        for name, a in outputs.items():
            accs[INVARIANCE][name].add(i, a)
            if SAME_EQUIVARIANCE in accs:  # the same activations, mapped back by T^-1
                accs[SAME_EQUIVARIANCE][name].add(i, t.inverse_on_map(a))
    for by_layer in accs.values():
        for acc in by_layer.values():
            acc.end_chunk()


def _result(
    spec: Measure,
    stats: dict[str, dict[str, dict[str, LayerStats]]],
    ts: list[Transformation],
    average: bool,
) -> InvarianceResult:
    reduce = average_feature_maps if average else (lambda v: v)
    labels = [t.label for t in ts]

    def build(group: str, by_layer: dict[str, LayerStats]) -> InvarianceResult:
        per_unit = {name: spec.compute(s, reduce).cpu().numpy() for name, s in by_layer.items()}
        n = next(iter(by_layer.values())).n_samples
        return InvarianceResult(spec.name, per_unit, labels, n, average, group)

    kind = SAME_EQUIVARIANCE if spec.same_equivariance else INVARIANCE
    if list(stats) == [ALL]:
        return build(ALL, stats[ALL][kind])
    per_group = {g: build(g, s[kind]) for g, s in stats.items()}
    pooled: dict[str, LayerStats] = {}
    for s in stats.values():
        for name, layer_stats in s[kind].items():
            pooled[name] = layer_stats if name not in pooled else pooled[name].merge(layer_stats)
    overall = build(ALL, pooled)
    return InvarianceResult(
        overall.measure, overall.per_unit, labels, overall.n_samples, average, ALL, per_group
    )
