"""Run the same measurement with tmeasures (optional dependency), to compare values and cost with ours.

One responsibility: adapt our model + layer names, images and transformation sets to tmeasures'
``ActivationsModule`` / ``TransformationSet`` / dataset interfaces and return its per-unit values in
our layout. tmeasures applies transformations one sample at a time and walks the N x T matrix once
per variance (twice for a normalized measure), in one thread per layer.

``pip install tmeasures`` also needs ``statsmodels`` (imported by its plots, not declared) and
declares ``opencv-python``, which clashes with the ``opencv-python-headless`` that grad-cam brings
(both install ``cv2``): ``pip install --no-deps tmeasures statsmodels`` avoids the clash.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from medseg_weak.errors import ConfigError
from medseg_weak.invariance.activations import LayerTap, SampleSource, eval_mode, model_device, resolve_layers
from medseg_weak.invariance.api import Transforms, as_transformations
from medseg_weak.invariance.transforms import Transformation

__all__ = ["TMEASURES_MEASURES", "tmeasures_available", "tmeasures_per_unit"]

# our measure name -> (tmeasures class name, which part of a quotient result: None = the quotient)
TMEASURES_MEASURES = {
    "normalized_variance": ("NormalizedVarianceInvariance", None),
    "transformation_variance": ("NormalizedVarianceInvariance", "x_result"),
    "sample_variance": ("NormalizedVarianceInvariance", "y_result"),
    "normalized_variance_same_equivariance": ("NormalizedVarianceSameEquivariance", None),
    "transformation_variance_same_equivariance": ("NormalizedVarianceSameEquivariance", "x_result"),
    "sample_variance_same_equivariance": ("NormalizedVarianceSameEquivariance", "y_result"),
}


def tmeasures_available() -> bool:
    try:
        import tmeasures.pytorch  # noqa: F401
    except ImportError:
        return False
    return True


def tmeasures_per_unit(
    model: nn.Module,
    images: torch.Tensor | Any,
    transforms: Transforms,
    layers: Sequence[str],
    measure: str = "normalized_variance",
    batch_size: int = 64,
    average_feature_maps: bool = True,
) -> dict[str, np.ndarray]:
    """tmeasures' per-unit values of ``measure`` for ``layers``, shaped as ``InvarianceResult.per_unit``."""
    import tmeasures as tm
    import tmeasures.pytorch as tmp

    if measure not in TMEASURES_MEASURES:
        raise ConfigError(f"no tmeasures counterpart for '{measure}'. Valid: {', '.join(TMEASURES_MEASURES)}")
    cls_name, part = TMEASURES_MEASURES[measure]
    taps = resolve_layers(model, layers)
    names = list(layers)
    source = SampleSource(images)
    ts = as_transformations(transforms)

    class Activations(tmp.ActivationsModule):
        def activation_names(self) -> list[str]:
            return names

        def forward_activations(self, x: torch.Tensor) -> list[torch.Tensor]:
            with LayerTap(taps) as tap:
                out = tap.run(model, x)
            return [out[n] for n in names]

    class Samples(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(source)

        def __getitem__(self, i: int) -> torch.Tensor:
            return source.batch([i])[0]

    class Member:
        """One transformation on one sample [C, H, W]; ``inverse()`` acts on one activation map."""

        def __init__(self, t: Transformation, on_maps: bool = False) -> None:
            self.t, self.on_maps = t, on_maps

        def __call__(self, x: torch.Tensor) -> torch.Tensor:
            return (self.t.inverse_on_map if self.on_maps else self.t)(x[None])[0]

        def inverse(self) -> Member:
            return Member(self.t, on_maps=True)

    class Members(tmp.PyTorchTransformationSet):
        def id(self) -> str:
            return ",".join(t.t.label for t in self)

        def valid_input(self, shape: tuple[int, ...]) -> bool:
            return True

        def copy(self) -> Members:
            return Members(list(self))

        def parameter_range(self) -> tuple[float, float]:
            params = [t.t.param for t in self]
            return min(params), max(params)

    device = str(model_device(model))
    options = tmp.PyTorchMeasureOptions(
        batch_size=batch_size,
        num_workers=0,
        verbose=False,
        model_device=device,
        measure_device=device,
        data_device=device,
    )
    reduce = tmp.AverageFeatureMaps() if average_feature_maps else tmp.NoTransformation()
    with eval_mode(model):
        result = getattr(tmp, cls_name)(reduce).eval(
            Samples(), Members([Member(t) for t in ts]), Activations(), options
        )
    assert isinstance(result, tm.MeasureResult)
    chosen = result if part is None else getattr(result, part)
    return {name: values.double().cpu().numpy() for name, values in zip(names, chosen.layers, strict=True)}
