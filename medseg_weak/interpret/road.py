"""ROAD (Rong et al., ICML 2022): remove pixels by noisy linear imputation, watch the class score.

Imputing the removed pixels from their neighbours (instead of painting them a constant) keeps the
removal's shape from leaking the map to the model. The imputation and the percentile rule are
pytorch-grad-cam's own objects (``RemoveMostRelevantFirst`` / ``RemoveLeastRelevantFirst`` with its
``NoisyLinearImputer``), so the numbers are the library's (tested equal to ``ROADMostRelevantFirst``
and ``ROADLeastRelevantFirst``); what this module changes is the batching: the imputed images of every
image x percentile are scored in forwards of ``batch_size`` instead of one forward per percentile.

Percentiles follow the library: MoRF at percentile p imputes the pixels at or above the map's p-th
percentile (the top 100 - p %), LeRF at p imputes all but the top p %. The imputation is a sparse
linear solve per image (scipy, CPU): that, not the forwards, is ROAD's cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from pytorch_grad_cam.metrics.perturbation_confidence import RemoveLeastRelevantFirst, RemoveMostRelevantFirst
from pytorch_grad_cam.metrics.road import NoisyLinearImputer

from medseg_weak.errors import ConfigError
from medseg_weak.interpret.scores import Score, class_scores

Order = Literal["morf", "lerf"]
#: The library's ROAD*Average percentiles, thinned to five: each one is a sparse solve per image.
DEFAULT_PERCENTILES: tuple[int, ...] = (10, 30, 50, 70, 90)


def road_scores(
    model: torch.nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    targets: torch.Tensor,
    order: Order = "morf",
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    score: Score = "probability",
    noise: float = 0.01,
    batch_size: int = 256,
) -> torch.Tensor:
    """``[N, P]`` score after imputation minus score before, per image and percentile.

    MoRF: lower (a larger drop) is more faithful; LeRF: higher (closer to 0) is more faithful.
    ``noise`` is the imputer's noise magnitude (the library's 0.01); it draws from torch's global RNG
    in the library's order (percentile by percentile, image by image).
    """
    if order not in ("morf", "lerf"):
        raise ConfigError(f"ROAD order must be 'morf' or 'lerf'; got '{order}'")
    if not percentiles:
        raise ConfigError("'interpret.road_percentiles' must name at least one percentile")
    removal = RemoveMostRelevantFirst if order == "morf" else RemoveLeastRelevantFirst
    imputer = NoisyLinearImputer(noise=noise)
    cpu_images = images.detach().float().cpu()
    cpu_maps = np.asarray(maps.detach().float().cpu().numpy(), dtype=np.float32)
    imputed = []
    for p in percentiles:
        perturb = removal(p, imputer)
        imputed += [perturb(cpu_images[i], torch.from_numpy(cpu_maps[i])) for i in range(len(cpu_images))]
    if not imputed:
        return torch.zeros(0, len(percentiles))
    repeated = targets.repeat(len(percentiles))
    after = class_scores(model, torch.stack(imputed), repeated, score, batch_size)
    before = class_scores(model, cpu_images, targets, score, batch_size)
    return (after.reshape(len(percentiles), -1) - before[None]).T.contiguous()
